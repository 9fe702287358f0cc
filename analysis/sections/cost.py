"""Q3, why back-propagate a scalar and not the B×outputs matrix? The benchmark (``make bench``): per-example
gradients against the batch gradient and the memory-write floor, for the MLP and the MNIST-1D CNN, and the
training step's cost."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from analysis import load, plots
from analysis.markdown import md_table
from analysis.plots import Skip
from analysis.section import Context, FigureSpec, Provider, Section

plt = plots.plt


@dataclass(frozen=True)
class BenchFacts:
    """``make bench``: the rows of its newest session, numbers typed."""

    experiment: str
    runs: pd.DataFrame
    per_example: pd.DataFrame  # kind == per_example: per-example gradient cost against B
    pow2: pd.DataFrame  # kind == pow2: step time at 2^k - 1, 2^k, 2^k + 1
    train: pd.DataFrame  # kind == train: compiled loop against PyTorch eager
    train_cnn: pd.DataFrame = field(default_factory=pd.DataFrame)  # kind == train_cnn: the CNN step, FLOP rates


def bench_facts(rows: pd.DataFrame, experiment: str = "benchmarks") -> BenchFacts:
    """Keep the newest ``bench_session``'s rows and type B, P and k as numbers."""
    newest = rows.groupby("bench_session")["end_time"].max().idxmax()
    b = rows[rows["bench_session"] == newest].copy()
    for col in ("B", "P", "k"):
        if col in b:
            b[col] = pd.to_numeric(b[col], errors="coerce")

    def kind(k):
        return b[b["kind"] == k] if "kind" in b else b.iloc[0:0]

    return BenchFacts(experiment=experiment, runs=b, per_example=kind("per_example"), pow2=kind("pow2"),
                      train=kind("train"), train_cnn=kind("train_cnn"))


def _read(ctx: Context) -> BenchFacts:
    return bench_facts(load.load_simple("benchmarks", "bench", "make bench"))


def text(ctx: Context) -> str:
    bench = ctx.bench
    if bench is None:
        return ctx.not_measured("bench", "run make bench")
    b = bench.per_example
    if b.empty:
        return "The benchmark runs hold no per-example results; run `make bench`.\n"
    big = b[b["P"] == b["P"].max()].sort_values("B")
    cols = {"B": "B", "ratio/vmap_to_batch": "vmap(grad)", "ratio/fast_to_batch": "fast", "ratio/norms_to_batch": "norms",
            "ratio/floor_to_batch": "write floor", "ratio/fast_to_floor": "fast / floor",
            "ratio/outer_to_floor": "outer products alone / floor", "ratio/loop_to_batch": "Python loop",
            "ratio/torch_vmap_to_batch": "torch.func vmap", "ratio/fused_mean_vmap_to_batch": "mean(vmap) under jit"}
    t = big[[c for c in cols if c in big]].rename(columns=cols)
    t["B"] = t["B"].astype(int)
    P = int(big["P"].iloc[0])
    vm, loop = big["ratio/vmap_to_batch"], big["ratio/loop_to_batch"]
    ff = big[big["B"] >= 32]["ratio/fast_to_floor"]
    cnn = b[b["net"].astype(str).str.startswith("cnn")]
    b = b[~b["net"].astype(str).str.startswith("cnn")]
    big = b[b["P"] == b["P"].max()].sort_values("B")
    nm = b["ratio/norms_to_batch"]
    tr = bench.train.sort_values("B")
    train_txt = ""
    if len(tr) and "ratio/torch_to_compiled" in tr and tr["ratio/torch_to_compiled"].notna().any():
        small = tr[tr["B"] <= 64]
        train_txt = (f" For training, mbstudy's compiled `lax.scan` loop takes {tr['s/compiled'].min() * 1e6:.0f}–"
                     f"{tr['s/compiled'].max() * 1e6:.0f} µs per step (B = {int(tr['B'].min())}–{int(tr['B'].max())}); "
                     f"a PyTorch eager loop is {small['ratio/torch_to_compiled'].min():.1f}–"
                     f"{small['ratio/torch_to_compiled'].max():.1f}× slower at B ≤ 64.")
    return (
        "Back-propagating the scalar mean loss yields the averaged gradient from ONE backward pass. "
        "Materialising the B per-example gradients first costs what the extra B × P numbers cost to write. "
        f"On the {P:,}-parameter MLP (`make bench`, {bench.runs['mode'].iloc[0]} mode, one run, "
        f"{bench.runs['device'].iloc[0]}, {bench.runs['cpu'].iloc[0]}), "
        f"`vmap(grad)` with the per-example tensor kept costs **{vm.min():.0f}–{vm.max():.0f}×** the batch "
        f"gradient, and a Python loop of B single-example gradients (seed 004's method) **{loop.min():.0f}–{loop.max():.0f}×**. "
        f"The one-backward-pass recipe (outer products a_i ⊗ δ_i) runs at **{ff.min():.2f}–{ff.max():.2f}×** the "
        f"time of merely writing B × P floats (B ≥ 32), and per-example norms cost **{nm.min():.2f}–{nm.max():.2f}×** the "
        f"batch gradient with no B × P tensor. Under one `jit`, `mean(vmap(grad))` costs {big['ratio/fused_mean_vmap_to_batch'].min():.2f}–"
        f"{big['ratio/fused_mean_vmap_to_batch'].max():.2f}× the batch gradient against {vm.min():.0f}–{vm.max():.0f}× with the "
        "tensor returned: XLA need not materialise what is reduced at once, so a benchmark of per-example "
        f"gradients must return them.{train_txt}\n\n"
        f"Time relative to the batch-mean gradient, P = {P:,}:\n\n{md_table(t, '.2f')}\n\n"
        + _cnn_cost(cnn, bench.train_cnn)
        + ctx.figure("q3_cost")
    )


def _cnn_cost(cnn: pd.DataFrame, train: pd.DataFrame) -> str:
    """The same for the MNIST-1D CNN, whose weights are shared across positions."""
    if cnn.empty:
        return ""
    cnn = cnn.sort_values("B")
    P = int(cnn["P"].iloc[0])
    ff = cnn[cnn["B"] >= 32]["ratio/fast_to_floor"]
    vf = cnn["ratio/fast_to_batch"] / cnn["ratio/vmap_to_batch"]
    out = (f"**The MNIST-1D CNN** (P = {P:,}; a convolution shares its weights across positions, so example i's "
           "gradient is a sum over positions of input patch ⊗ delta, one einsum after the batched backward pass): "
           f"`vmap(grad)` costs {cnn['ratio/vmap_to_batch'].min():.1f}–{cnn['ratio/vmap_to_batch'].max():.1f}× the batch "
           f"gradient, the one-pass recipe {cnn['ratio/fast_to_batch'].min():.1f}–{cnn['ratio/fast_to_batch'].max():.1f}× "
           f"({vf.min():.2f}–{vf.max():.2f}× vmap's time"
           + (f"; {ff.min():.2f}–{ff.max():.2f}× the write floor at B ≥ 32" if len(ff) else "")
           + f"), and per-example norms {cnn['ratio/norms_to_batch'].min():.2f}–{cnn['ratio/norms_to_batch'].max():.2f}× "
           "(for a convolution, the norm comes from the patches and deltas' Gram matrices or from the per-example "
           "gradient of that layer, whichever is smaller).")
    if len(train):
        train = train.sort_values("B")
        big = train[train["B"] >= 16]
        out += (f" A CNN training step takes {train['s/compiled'].min() * 1e6:.0f}–{train['s/compiled'].max() * 1e6:.0f} µs "
                f"(B = {int(train['B'].min())}–{int(train['B'].max())}), {train['ratio/compiled_to_lean_scan'].min():.2f}–"
                f"{train['ratio/compiled_to_lean_scan'].max():.2f}× the leanest scan of the same step"
                + (f", at {big['ratio/cnn_to_mlp_flop_rate'].min():.0%}–{big['ratio/cnn_to_mlp_flop_rate'].max():.0%} of "
                   "the MLP step's FLOP rate for B ≥ 16" if len(big) else "") + ".")
    cols = {"B": "B", "ratio/vmap_to_batch": "vmap(grad)", "ratio/fast_to_batch": "fast",
            "ratio/norms_to_batch": "norms", "ratio/floor_to_batch": "write floor", "ratio/fast_to_floor": "fast / floor"}
    t = cnn[list(cols)].rename(columns=cols)
    t["B"] = t["B"].astype(int)
    return out + f"\n\n{md_table(t, '.2f')}\n\n"


def per_example_cost(ctx: Context):
    """Per-example gradient cost relative to the batch gradient, one panel per network size."""
    b = ctx.bench
    pe = b.per_example
    if pe.empty:
        raise Skip("the benchmark session holds no per-example rows")
    nets = sorted(set(pe["net"]), key=lambda n: int(pe[pe["net"] == n]["P"].iloc[0]))
    fig, axes = plt.subplots(1, len(nets), figsize=(3.3 * len(nets), 3.0), squeeze=False, sharey=True)
    for j, net in enumerate(nets):
        plots.plot_cost(axes[0, j], pe[pe["net"] == net])
        kind = "MNIST-1D CNN" if net.startswith("cnn") else f"MLP {net}"
        axes[0, j].set_title(f"{kind}\n(P = {int(pe[pe['net'] == net]['P'].iloc[0]):,})")  # one line overlaps
    plots.legend_right(fig, axes[0, 0])
    big = pe[pe["P"] == pe["P"].max()]
    ff = big[big["B"] >= 32]["ratio/fast_to_floor"]
    plots.suptitle(fig, f"Per-example gradients on {b.runs['device'].iloc[0]}: vmap(grad) costs "
                 f"{big['ratio/vmap_to_batch'].min():.0f}–{big['ratio/vmap_to_batch'].max():.0f}× the batch gradient "
                 f"at P = {int(big['P'].iloc[0]):,};\nthe one-pass recipe runs at "
                 f"{ff.min():.1f}–{ff.max():.1f}× the write floor (B ≥ 32)")
    return fig


def finding(ctx: Context) -> str | None:
    if ctx.bench is None or ctx.bench.per_example.empty:
        return None
    b = ctx.bench.per_example
    b = b[~b["net"].astype(str).str.startswith("cnn")]
    big = b[b["P"] == b["P"].max()]
    ff = big[big["B"] >= 32]["ratio/fast_to_floor"]
    return (f"One backward pass gives the mean. Keeping B per-example gradients costs up to "
            f"{big['ratio/vmap_to_batch'].max():.0f}× the batch gradient ({int(big['P'].iloc[0]):,} parameters, this "
            f"run); the one-pass recipe runs at {ff.min():.2f}–{ff.max():.2f}× the cost of writing B×P floats (B ≥ 32).")


SECTION = Section(
    "Q3", "Why back-propagate a scalar and not the B×outputs matrix? Is averaging B per-example gradients B times "
          "the work?",
    text=text,
    provides=(Provider("bench", _read),),
    figures=(FigureSpec("q3_cost", per_example_cost, ("bench",), "Per-example gradient cost relative to the batch "
                        "gradient, against the memory-write floor.", log_artifact=False),),
    limits="One CPU (2 cores); an MLP of up to 670k parameters and the 5k-parameter CNN; no GPU, where memory "
           "bandwidth and kernel launch costs differ; one benchmark run per study, so timings carry this machine's "
           "load.",
    finding=("Q3 why a scalar, not B×outputs?", finding),
)
