"""Q8, accumulate micro-batches into one step, or take more small steps? Three experiments: gradient
accumulation against small steps (:mod:`~analysis.sections.accumulation`), Adam's β2 at a fixed half-life
(:mod:`~analysis.sections.beta2`) and the SDE square-root rule (:mod:`~analysis.sections.sde`)."""

from __future__ import annotations

from analysis.markdown import interval
from analysis.section import Answer, Context, Section
from analysis.sections import accumulation, beta2, sde
from analysis.sections.beta2 import arm_test
from mbstudy.metrics import TRAIN_TARGET


def _cells(ctx: Context):
    a = ctx.accumulation
    if a is None or a.table.empty:
        return None
    t = a.table[(a.table["target"] == TRAIN_TARGET) & (a.table["k"] > 1)]
    return t if len(t) else None


def limits(ctx: Context) -> str:
    seeds = {name: int(f.table["n_seeds"].max()) for name, f in (("accumulation", ctx.accumulation),
                                                                  ("beta2", ctx.beta2)) if f is not None and len(f.table)}
    if ctx.sde is not None and len(ctx.sde.distances):
        seeds["sde"] = int(ctx.sde.distances["n_seeds"].max())
    counts = ", ".join(f"{n} seeds in `{name}`" for name, n in seeds.items())
    return (f"The MNIST-1D MLP only ({counts}); half-decade learning-rate grids (the robust band's resolution is half "
            "a decade), one half-life (that of β2 = 0.999 at B = 128), Adam's β1 and ε unscaled in the half-life arm, "
            "micro-batches of 8 and 256 only, with kb at most 2048 of the 3200 training examples (4000 less the validation fifth); times are this "
            "2-core CPU's, measured while the sweep ran two runs at a time.")


def text(ctx: Context) -> str:
    head = ""
    t = _cells(ctx)
    if t is not None:
        costly = [accumulation.verdict(r.examples_ratio, r.examples_holm) == "costs more" for r in t.itertuples()]
        slower = [accumulation.verdict(r.time_ratio, r.time_holm) == "costs more" for r in t.itertuples()]
        head = (f"**Take the small steps. Accumulating k micro-batches is one step at batch kb: it never saved examples "
                f"here and cost more in {sum(costly)} of {len(t)} cells, and it was slower in wall-clock time in "
                f"{sum(slower)} (Holm, 5%). Accumulate only to reach a batch the memory cannot hold.** The evidence, "
                "then two claims about Adam at small batches:\n\n")
    return head + "\n\n".join([accumulation.text(ctx), beta2.text(ctx), sde.text(ctx)])


def finding(ctx: Context) -> Answer | None:
    t, b, s = _cells(ctx), ctx.beta2, ctx.sde
    if t is None and b is None and s is None:
        return None
    answer, number, caveat = [], [], ["MNIST-1D MLP only"]
    if t is not None:
        costly = sum(accumulation.verdict(r.examples_ratio, r.examples_holm) == "costs more" for r in t.itertuples())
        cheaper = sum(accumulation.verdict(r.examples_ratio, r.examples_holm) == "costs less" for r in t.itertuples())
        answer.append(f"take small steps: accumulating cost more examples in {costly} of {len(t)} cells, fewer in "
                      f"{cheaper} (Holm)")
        w = t.loc[t["examples_ratio"].idxmax()]
        number.append(f"at most {interval(w.examples_ratio, w.examples_lo, w.examples_hi, '.2f')}× the examples "
                      f"(b = {int(w.micro)}, k = {int(w.k)})")
    if b is not None and len(b.table):
        B = int(b.table["batch_size"].min())
        fixed, half, _ = b.arms
        r = arm_test(b, half, fixed, B)
        number.append(f"half-life β2 over 0.999 at B = {B}: {interval(*r[:3], fmt='.2f')}× the steps")
    if s is not None and len(s.distances):
        d = s.distances
        sq = d[d["rule"] == "square-root"]
        by = {v: [str(int(k)) for k in sq[sq["verdict"] == v]["kappa"]] for v in ("matches", "differs")}
        rest = [str(int(k)) for k in sq[~sq["verdict"].isin(("matches", "differs"))]["kappa"]]
        said = [f"{what} at κ = {', '.join(ks)}" for what, ks in (("matched the reference curve", by["matches"]),
                                                                   ("differed", by["differs"]),
                                                                   ("was not resolved", rest)) if ks]
        answer.append("the SDE square-root rule " + ("; ".join(said) if said else "was not measured"))
    return Answer("; ".join(answer) + ".", "; ".join(number), "; ".join(caveat))


SECTION = Section(
    "Q8", "Accumulate micro-batches into one step, or take more small steps?",
    text=text,
    parts=(accumulation.SECTION, beta2.SECTION, sde.SECTION),
    limits=limits,
    finding=("Q8 accumulate, or take small steps?", finding),
)
