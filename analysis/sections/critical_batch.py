"""Q9, what sets the critical batch size? Over training (branching from checkpoints), with a batch-size warm-up,
with data size and model size, and in the noisy quadratic model; and the advice that follows from them."""

from __future__ import annotations

from analysis.markdown import finite
from analysis.section import Answer, Context, Section
from analysis.sections import branching, nqm, scaling, warmup
from analysis.sections.local_critical import TOL, shape, summary_of, value_text
from mbstudy.metrics import TRAIN_TARGET

LIMITS = ("One workload (the MNIST-1D MLP); SGD and Adam for the branches, the warm-ups and the scaling fits "
          "(the language model's section repeats the branches and the doubling and placed warm-ups with Adam on "
          "held-out text); "
          "a training-loss target on a data set seen for many epochs, where Merrill et al. and Zhang et al. "
          "train language models for about one epoch to a validation loss; batch sizes in factors of 2 (branches) "
          "and 4 (scaling), so a local B_crit is resolved to a factor of 2 and its interval is a set of grid "
          "values; quarter- and half-decade learning-rate grids; 10 seeds for the warm-ups, 8 for the branches, 5 for the scaling sweep; the doubling warm-ups run at one rate each and the constant arms at three (the placed warm-ups at three rate levels, tuned as the constant arms are). MNIST-1D at "
          "each size is a fresh draw of the generator (not nested in the larger ones), with its own 1000-example "
          "test set. A warm-up phase continues the data order of a constant run at its B from the examples seen "
          "so far, not an epoch of its own. The NQM's "
          "spectrum is assumed (a power law, noise proportional to the curvature), not measured: the study "
          "measures no Hessian, so the model is matched on B_simple at initialisation and on the target's share of "
          "the initial loss only.")


def _parts(ctx: Context) -> list[str]:
    """One clause per experiment that ran: its verdict, computed under Holm's rule."""
    parts = []
    f, w, sc, n = ctx.branching, ctx.warmup, ctx.scaling, ctx.nqm
    if f is not None and not f.local.empty:
        parts.append(f"over training the local B_crit of SGD (tolerance {TOL:.0%}) {shape(f)['rise'].split(' (ratio')[0]}"
                     + (f", of Adam {branching.adam_shape(ctx)['rise'].split(' (ratio')[0]}"
                        if ctx.branching_adam is not None and not ctx.branching_adam.local.empty else ""))
    if w is not None and not w.schedules.empty and w.best_constant:
        parts.append(warmup.verdict(w))
    if sc is not None and not sc.fits.empty:
        parts.append("Zhang et al.'s data/model-size claim " + scaling.zhang_verdict(sc))
    if n is not None:
        pairs = nqm.measured_pairs(ctx, list(n.fits["optimizer"]))
        said = nqm.agreement(n, pairs)[0] if len(pairs) else "not compared"
        parts.append(f"the matched NQM's order of B_crit {said if said != 'agrees' else 'agrees with every measured pair'}")
    return parts


def practice(ctx: Context) -> str:
    """The "what to do" paragraph, from whichever of the three experiments ran; each piece of advice only where its
    verdict resolves it."""
    parts = []
    f, w, sc = ctx.branching, ctx.warmup, ctx.scaling
    if f is not None and not f.local.empty:
        head = f.local[f.local["tol"] == TOL].sort_values("s").dropna(subset=["b_crit"])
        if len(head):
            r0 = head.iloc[0]
            grows = shape(f)["rise"].startswith("rises")
            if summary_of(r0).measured:
                parts.append(f"for SGD on a workload like this MNIST-1D MLP, start at B ≈ {r0['b_crit']:.0f} (the local "
                             f"B_crit at initialisation, {value_text(r0)}, tolerance {TOL:.0%})"
                             + (" and let it grow, as the resolved rise says" if grows else
                                " (no rise is resolved, so no schedule for B follows from it)"))
            else:
                parts.append(f"the local B_crit at initialisation is a bound ({value_text(r0)}): no starting B follows")
    if w is not None and not w.schedules.empty and w.best_constant and w.schedules["steps"].notna().any():
        c = warmup.counts(w)
        n = len(w.schedules)
        if c["start_fewer"]:
            parts.append(f"a doubling warm-up took fewer steps than staying at its starting B in {c['start_fewer']} of "
                         f"{n} schedules, as Merrill et al. measure it")
        if c["equal_fewer"] or c["best_fewer"]:
            parts.append("a doubling warm-up can pay when steps cost more than examples (fewer steps resolved in "
                         f"{max(c['equal_fewer'], c['best_fewer'])} of {n} schedules)")
        elif c["equal_more"] == n:
            parts.append("on this workload a constant B read off the steps-against-examples curve took fewer steps "
                         "than every warm-up")
        else:
            parts.append("whether a warm-up pays on this workload is not resolved")
    if sc is not None and not sc.slopes.empty:
        for axis, what in (("data", "the training set grows"), ("width", "the model widens")):
            if scaling.trend(sc, axis, TRAIN_TARGET) not in ("grows", "falls"):
                continue
            x = sc.slopes[(sc.slopes["axis"] == axis) & (sc.slopes["target"] == TRAIN_TARGET)].iloc[0]
            if finite(x["slope"], x["lo"], x["hi"]):
                parts.append(f"when {what} by 2×, expect B_crit to change by {2 ** x['slope']:.2f}× "
                             f"[{2 ** x['lo']:.2f}, {2 ** x['hi']:.2f}] on the training-loss target")
    if not parts:
        return ""
    return "**What to do.** On this evidence: " + "; ".join(parts) + ".\n"


def text(ctx: Context) -> str:
    parts = _parts(ctx)
    opener = ("**" + "; ".join(p[0].upper() + p[1:] if k == 0 else p for k, p in enumerate(parts)) + ".**"
              if parts else "")
    return "\n\n".join(x for x in [opener, branching.text(ctx), warmup.text(ctx), scaling.text(ctx), nqm.text(ctx),
                                   practice(ctx)] if x)


def finding(ctx: Context) -> Answer | None:
    parts = _parts(ctx)
    if not parts:
        return None
    f = ctx.branching
    number = ""
    if f is not None and not f.local.empty:
        head = f.local[f.local["tol"] == TOL].sort_values("s")
        number = "local B_crit (SGD, tolerance {:.0%}) ".format(TOL) + " → ".join(value_text(r) for _, r in head.iterrows())
    return Answer(parts[0][0].upper() + parts[0][1:] + ("; " + "; ".join(parts[1:]) if len(parts) > 1 else "") + ".",
                  number, "one workload (MNIST-1D MLP), SGD and Adam; verdicts "
                  "under Holm's rule within each part")


SECTION = Section(
    "Q9", "What sets the critical batch size? Over training, with data size, with model size, and in the noisy "
          "quadratic model",
    text=text,
    parts=(branching.SECTION, warmup.SECTION, scaling.SECTION, nqm.SECTION),
    limits=LIMITS,
    finding=("Q9 what sets the critical batch size?", finding),
)
