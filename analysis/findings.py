"""The README's table "What the study found", generated from the same facts as the report (never typed).

:func:`table` turns :class:`analysis.facts.Facts` into a Markdown table, one row
per question, each answer short and with its numbers; :func:`update_readme`
replaces the block between :data:`START` and :data:`END` in ``README.md``.
``make report`` does both after writing the report, so the README states what
the report's runs show.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.facts import Facts
from analysis.generalisation import BUDGETS
from analysis.q8 import FIXED, HALF, arm_ratio
from analysis.q9 import TOL
from analysis.report_workloads import interval

START = "<!-- findings:start (written by `make report` from the runs; edits here are overwritten) -->"
END = "<!-- findings:end -->"


def _q1(f: Facts) -> str | None:
    if f.equivalence is None:
        return None
    eq = f.equivalence.runs
    errs = [c for c in eq if c.startswith("err/") and "mistake" not in c and "single_output" not in c
            and "finite_difference" not in c]
    f64 = eq[eq["dtype"] == "float64"][errs].to_numpy(float)
    f32 = eq[eq["dtype"] == "float32"][errs].to_numpy(float)
    m = eq["err/accumulated_equal_weights_mistake"]
    return (f"Yes, exactly (linearity). float64: ≤ {np.nanmax(f64):.1e}; float32: ≤ {np.nanmax(f32):.1e}. Averaging "
            f"unequal micro-batch means with equal weights is {m.min():.0%}–{m.max():.0%} off.")


def _q2(f: Facts) -> str | None:
    if f.equivalence is None:
        return None
    w = f.equivalence.runs["err/single_output_vs_true"]
    return f"That drops all but one term of the chain rule: {w.min():.0%}–{w.max():.0%} off the true gradient."


def _q3(f: Facts) -> str | None:
    if f.bench is None or f.bench.per_example.empty:
        return None
    b = f.bench.per_example
    b = b[~b["net"].astype(str).str.startswith("cnn")]
    big = b[b["P"] == b["P"].max()]
    ff = big[big["B"] >= 32]["ratio/fast_to_floor"]
    return (f"One backward pass gives the mean. Keeping B per-example gradients costs up to "
            f"{big['ratio/vmap_to_batch'].max():.0f}× the batch gradient ({int(big['P'].iloc[0]):,} parameters, this "
            f"run); the one-pass recipe runs at {ff.min():.2f}–{ff.max():.2f}× the cost of writing B×P floats (B ≥ 32).")


def _q4(f: Facts) -> str | None:
    if f.default is None or f.default.sum_mean_slopes.empty:
        return None
    s = {r.optimizer: r.slope for r in f.default.sum_mean_slopes.itertuples()}
    return (f"SGD/momentum: the best lr of sum over mean scales as B^{s.get('sgd', np.nan):.2f} / "
            f"B^{s.get('momentum', np.nan):.2f} (algebra: B^−1). Adam: B^{s.get('adam', np.nan):.2f}.")


def _q5(f: Facts) -> str | None:
    w = f.workloads
    if w is None or w.checks.empty:
        return None
    c = w.checks[w.checks["target"] == "loss"]
    parts = []
    for wl in w.workloads:
        sub = c[c["workload"] == wl]
        if len(sub):
            parts.append(f"{wl}: " + ", ".join(f"{r.optimizer} {interval(r.B_crit, r.B_crit_lo, r.B_crit_hi, '.0f')}"
                                               for r in sub.itertuples()))
    perfect = int(w.checks["slope_verdict"].str.startswith("perfect").sum())
    return ("Steps to a target follow S(B) = S_min(1 + B_crit/B); B_crit (training-loss target, 95% bootstrap CI "
            "over seeds): " + "; ".join(parts) + f". Small-B slope consistent with −1 in {perfect} of "
            f"{len(w.checks)} fits (both targets). Per example seen, small batches are more efficient.")


def _q5b(f: Facts) -> str | None:
    g = f.generalisation
    if g is None or g.gaps.empty:
        return None
    out = []
    for b in BUDGETS:
        sub = g.gaps[g.gaps["budget"] == b]
        if len(sub):
            out.append(f"{b}: larger B worse in {int((sub['verdict'] == 'larger B worse').sum())} of {len(sub)} workloads")
    return "Test error, B = 8 against 512, momentum, lr tuned per B: " + "; ".join(out) + "."


def _q6(f: Facts) -> str | None:
    if f.bench is None or f.bench.pow2.empty:
        return None
    t = f.bench.pow2
    p, m, o = (t[c].astype(float) for c in ("us/pow2", "us/pow2_minus_1", "us/pow2_plus_1"))
    fastest = int(((p < m) & (p < o)).sum())
    r = np.concatenate([(m / p).to_numpy(), (o / p).to_numpy()])
    return (f"2^k was fastest of {{2^k−1, 2^k, 2^k+1}} in {fastest} of {len(t)} cases on this CPU; 2^k ± 1 cost "
            f"{r.min():.2f}–{r.max():.2f}× 2^k.")


def _q7(f: Facts) -> str | None:
    if f.noise is None:
        return None
    n = f.noise
    return (f"Partly. B_simple = tr(Σ)/‖G‖² ≈ {n.at_init:.0f} at initialisation, median {n.end_median:.0f} at the "
            f"end of training ({n.end_median / n.at_init:.0f}×), MNIST-1D MLP.")


def _q8(f: Facts) -> str | None:
    a, b, s = f.accumulation, f.beta2, f.sde
    parts = []
    if a is not None and len(a.table):
        t = a.table[(a.table["target"] == "loss") & (a.table["k"] > 1)]
        if len(t):
            w = t.loc[t["examples_ratio"].idxmax()]
            parts.append(f"accumulating k micro-batches is the batch kb: {t['examples_ratio'].min():.2f}–"
                         f"{t['examples_ratio'].max():.2f}× the examples of k small steps (most: {w.optimizer}, "
                         f"b = {int(w.micro)}, k = {int(w.k)}, {interval(w.examples_ratio, w.examples_lo, w.examples_hi, '.2f')})")
    if b is not None and len(b.table):
        B = int(b.table["batch_size"].min())
        r = arm_ratio(b, HALF, FIXED, B)
        parts.append(f"β2 at a fixed half-life vs 0.999 at B = {B}: {interval(*r, fmt='.2f')}× the steps")
    if s is not None and len(s.distances):
        ok = s.distances[s.distances["within"]]
        parts.append("SDE square-root rule within seed noise at κ = "
                     + (", ".join(str(k) for k in ok[ok["rule"] == "square-root"]["kappa"]) or "none")
                     + ", linear rule at κ = " + (", ".join(str(k) for k in ok[ok["rule"] == "linear"]["kappa"]) or "none"))
    return "; ".join(parts) + "." if parts else None


def _q9(f: Facts) -> str | None:
    parts = []
    if f.branching is not None and not f.branching.local.empty:
        head = f.branching.local[f.branching.local["tol"] == TOL].sort_values("s")
        parts.append("local B_crit (SGD, from checkpoints) " + " → ".join(f"{v:.0f}" for v in head["b_crit"])
                     + f" from {head['fraction'].iloc[0]:.0%} to {head['fraction'].iloc[-1]:.0%} of the steps to "
                     "the target")
    if f.warmup is not None and not f.warmup.schedules.empty:
        t = f.warmup.schedules
        lower = sum(1 for r in t.itertuples() if all(np.isfinite(r.vs_equal)) and r.vs_equal[2] < 1)
        parts.append(f"doubling warm-ups took fewer steps at no more examples than a constant B in {lower} of {len(t)}")
    if f.scaling is not None and not f.scaling.slopes.empty:
        sl = f.scaling.slopes.set_index(["axis", "target"])
        for axis in ("data", "width"):
            if (axis, "loss") in sl.index:
                x = sl.loc[(axis, "loss")]
                parts.append(f"log-log slope against {axis} {interval(x['slope'], x['lo'], x['hi'], '.2f')}")
    if f.nqm is not None:
        order = f.nqm.fits.sort_values("B_crit")["optimizer"]
        parts.append("NQM orders B_crit " + " < ".join(order))
    return "; ".join(parts) + "." if parts else None


def _sanity(f: Facts) -> str | None:
    if f.published is None:
        return None
    a = f.published.accuracy
    return "; ".join(f"{r.model} {r.mean:.1%} (paper {r.paper:.0%})" for r in a.itertuples()) + \
        f", the paper's recipe, {int(a['seeds'].max())} seed(s)."


ROWS = [
    ("Q1 batch gradient = mean of per-example gradients?", _q1),
    ("Q2 \"only o₁₁ contributes\"?", _q2),
    ("Q3 why a scalar, not B×outputs?", _q3),
    ("Q4 sum or mean?", _q4),
    ("Q5 per example or per batch?", _q5),
    ("Q5b do small batches generalise better?", _q5b),
    ("Q6 powers of two?", _q6),
    ("Q7 do gradients cancel?", _q7),
    ("Q8 accumulate, or take small steps?", _q8),
    ("Q9 what sets the critical batch size?", _q9),
    ("sanity: the MNIST-1D paper's accuracies", _sanity),
]


def table(facts: Facts) -> str:
    """The Markdown table; a question whose runs are missing says so."""
    lines = ["| question | answer, measured |", "|---|---|"]
    for q, fn in ROWS:
        ans = fn(facts)
        lines.append(f"| {q} | {ans if ans else 'not measured in this store: see the report'} |")
    return "\n".join(lines)


def update_readme(readme: Path, text: str) -> bool:
    """Replace the block between START and END in ``readme`` with ``text``; False when the markers are absent."""
    body = readme.read_text()
    if START not in body or END not in body:
        return False
    head, rest = body.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{text}\n{END}{tail}"
    if new != body:
        tmp = readme.with_suffix(".tmp")
        tmp.write_text(new)
        tmp.replace(readme)
    return True
