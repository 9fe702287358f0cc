"""What the runs say, once: typed facts per experiment, from the pure reductions.

``collect()`` is the one place that reads MLflow for the figures and the report
(through ``analysis.load``) and reduces each experiment's runs with
``analysis.reduce``. Everything downstream (``analysis.figures``,
``analysis.report``) reads the frozen dataclasses returned here, by attribute,
in any order. An experiment whose runs are missing is ``None`` in ``Facts``
and its ``MissingRuns`` message (which names the command to run) is kept in
``Facts.missing``. Nothing here draws or writes files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import load, reduce
from analysis.generalisation import KEYS as GENERALISATION_KEYS
from analysis.generalisation import GeneralisationFacts, generalisation_facts
from analysis.q8 import AccumulationFacts, Beta2Facts, SdeFacts, accumulation_facts, beta2_facts, sde_facts
from analysis.q9 import (BranchFacts, NqmFacts, ScalingFacts, WarmupFacts, branch_facts, nqm_facts, scaling_facts,
                         warmup_facts)
from analysis.workloads import SMALL_B, WorkloadFacts, fastest_runs, workload_facts, workload_of

OPTIMIZERS = ("sgd", "momentum", "adam")  # the order of panels, table rows and listings
LOSS_LEVEL = 1.0  # the training loss whose first crossing is counted in examples (Q5, figure a)
SMALL_B_LR = 64  # the best SGD learning rate's slope is measured for B up to this
SMALL_B_STEPS = 16  # the steps-to-target slope (perfect scaling is -1) is measured for B up to this


def present(optimizers, seen) -> tuple[str, ...]:
    """The optimizers of ``optimizers`` that occur in ``seen``, in that order, then any others
    of ``seen`` (an optimizer registered outside the study) sorted by name."""
    seen = set(seen)
    return tuple(o for o in optimizers if o in seen) + tuple(sorted(str(o) for o in seen - set(optimizers)))


@dataclass(frozen=True)
class DefaultFacts:
    """The main sweep (``make sweep``): every (optimizer, reduction, B, lr, seed)."""

    experiment: str  # the MLflow experiment (``--default``)
    runs: pd.DataFrame  # one row per finished run (``load.load_runs``)
    optimizers: tuple[str, ...]  # those in the runs, in OPTIMIZERS order
    best_lr: pd.DataFrame  # lowest final training loss per (optimizer, reduction, B): ``reduce.best_lr``
    loss_curves: pd.DataFrame  # training loss over steps at each group's best lr: ``reduce.curves``
    examples_to_loss_1: pd.Series  # per B: fewest examples (over optimizers) to reach loss 1, mean reduction
    heatmap: pd.DataFrame  # median final loss and diverged fraction per (optimizer, reduction, B, lr)
    sum_mean_slopes: pd.DataFrame  # per optimizer: slope in B of best lr(sum) / best lr(mean)
    largest_stable_sgd_lr: pd.Series  # per (reduction, B): the largest SGD lr that did not diverge
    b_simple_curves: pd.DataFrame  # B_simple over steps at each group's best lr (may be empty)

    @property
    def curve_reduction(self) -> str:
        """The reduction the loss-curve figures show: ``mean``, or the first one the runs have."""
        reds = set(self.runs["reduction"])
        return "mean" if "mean" in reds or not reds else sorted(reds)[0]

    @property
    def mean_loss_curves(self) -> pd.DataFrame:
        """The loss curves of ``curve_reduction`` (``mean`` in the study)."""
        return self.loss_curves[self.loss_curves["reduction"] == self.curve_reduction]


@dataclass(frozen=True)
class ScienceFacts:
    """The science sweep (``make sweep GRID=science``): steps to a target loss against B."""

    experiment: str  # the MLflow experiment (``--science``)
    runs: pd.DataFrame
    optimizers: tuple[str, ...]
    steps_to_target: dict[str, pd.DataFrame]  # per optimizer: ``reduce.steps_to_target``
    fits: dict[str, dict[str, float]]  # per optimizer: S(B) = S_min (1 + B_crit / B), ``reduce.fit_hyperbola``
    small_b_steps_slopes: dict[str, float]  # per optimizer with a target reached: log-log slope for B <= 16
    # per optimizer: (estimate, lo, hi) of B_crit, S_min, E_min and the small-B slope, 95% bootstrap over seeds
    # (``reduce.bootstrap_fit``; lo, hi NaN with one seed)
    intervals: dict[str, dict[str, tuple[float, float, float]]]
    n_seeds: int  # seeds per configuration (the most any group has)
    best_lr: pd.DataFrame  # fewest steps to target (or lowest final loss) per group
    sgd_lr_slope: float  # log-log slope of SGD's best lr against B for B <= 64 (NaN: too few points)


@dataclass(frozen=True)
class NoiseFacts:
    """The simple noise scale B_simple = tr(Σ)/‖G‖² over training, from the main sweep's best-lr runs."""

    experiment: str  # the main sweep, where these curves were logged
    curves: pd.DataFrame  # ``DefaultFacts.b_simple_curves``, never empty here
    at_init: float  # median over groups at step 0
    end_median: float  # median over groups of the last logged value


@dataclass(frozen=True)
class ReductionFacts:
    """``make reduction``: sum and mean trained side by side, with a 1e-7 perturbation control."""

    experiment: str
    runs: pd.DataFrame  # one row per comparison and B, params as logged (strings)
    distances: pd.DataFrame  # history of dist/pair and dist/control, with comparison and batch_size
    final_ratio: pd.Series  # per run: final pair distance / final control distance


@dataclass(frozen=True)
class EquivalenceFacts:
    """``make equivalence``: every gradient identity's relative error, float32 and float64."""

    experiment: str
    runs: pd.DataFrame


@dataclass(frozen=True)
class BenchFacts:
    """``make bench``: the rows of its newest session, numbers typed."""

    experiment: str
    runs: pd.DataFrame
    per_example: pd.DataFrame  # kind == per_example: per-example gradient cost against B
    pow2: pd.DataFrame  # kind == pow2: step time at 2^k - 1, 2^k, 2^k + 1
    train: pd.DataFrame  # kind == train: compiled loop against PyTorch eager
    train_cnn: pd.DataFrame = field(default_factory=pd.DataFrame)  # kind == train_cnn: the CNN step, FLOP rates


# Greydanus 2020 (arXiv:2011.14439), the MNIST-1D paper's table of test accuracies
PUBLISHED_ACCURACY = {"mlp": 0.68, "cnn": 0.94}


@dataclass(frozen=True)
class PublishedFacts:
    """The ``published`` sweep: the MNIST-1D paper's recipe, test accuracy per model against the paper's."""

    experiment: str
    runs: pd.DataFrame
    accuracy: pd.DataFrame  # per model: mean, min and max over seeds of the final test accuracy, seeds, the paper's


def published_facts(runs: pd.DataFrame, experiment: str = "published") -> PublishedFacts:
    r = runs.assign(model=runs["model"] if "model" in runs else "mlp")
    acc = (r.groupby("model")["final/test/acc"].agg(mean="mean", low="min", high="max", seeds="size")
           .reset_index())
    best = r.groupby("model")["best/test/acc"].mean() if "best/test/acc" in r else None
    acc["best_mean"] = acc["model"].map(best) if best is not None else float("nan")
    acc["paper"] = acc["model"].map(PUBLISHED_ACCURACY)
    return PublishedFacts(experiment=experiment, runs=runs, accuracy=acc)


@dataclass(frozen=True)
class Facts:
    """Everything the figures and the report read; ``None`` where the runs are missing."""

    default: DefaultFacts | None = None
    science: ScienceFacts | None = None  # the headline workload (MNIST-1D MLP), training-loss target
    workloads: WorkloadFacts | None = None  # every workload and target of the science sweep
    generalisation: GeneralisationFacts | None = None  # Q5b: the generalisation sweep under three budgets
    noise: NoiseFacts | None = None  # derived from default; None also when it logged no B_simple
    equivalence: EquivalenceFacts | None = None
    reduction: ReductionFacts | None = None
    bench: BenchFacts | None = None
    published: PublishedFacts | None = None
    accumulation: AccumulationFacts | None = None  # Q8: accumulated micro-batches against small steps
    beta2: Beta2Facts | None = None  # Q8: Adam's beta2 at a fixed half-life
    sde: SdeFacts | None = None  # Q8: the SDE square-root rule
    branching: BranchFacts | None = None  # Q9: the local critical batch size from checkpoints
    warmup: WarmupFacts | None = None  # Q9: batch-size warm-up against constant B
    scaling: ScalingFacts | None = None  # Q9: B_crit against data size and width
    nqm: NqmFacts | None = None  # Q9: the noisy quadratic model matched to the branching reference
    missing: dict[str, str] = field(default_factory=dict)  # field name -> MissingRuns message (names the command)


EXPERIMENTS = ("default", "science", "workloads", "generalisation", "equivalence", "reduction", "bench",
               "published", "accumulation", "beta2", "sde", "branching", "warmup", "scaling")
# noise: derived from default; nqm: computed from the branching reference
HEADLINE = "mnist1d-mlp"  # the workload of Q5's detailed figures (the others: analysis.workloads)


# ------------------------------------------------------------ one per experiment


def default_facts(runs: pd.DataFrame, history: pd.DataFrame, experiment: str) -> DefaultFacts:
    best = reduce.best_lr(runs)
    at_best = reduce.select(runs, best)
    curves = reduce.curves(history, at_best)
    reds = set(runs["reduction"])
    mean_curves = curves[curves["reduction"] == ("mean" if "mean" in reds or not reds else sorted(reds)[0])]
    crossing = reduce.first_crossing(mean_curves, "examples", LOSS_LEVEL)
    sgd = runs[runs["optimizer"] == "sgd"]
    return DefaultFacts(
        experiment=experiment,
        runs=runs,
        optimizers=present(OPTIMIZERS, runs["optimizer"]),
        best_lr=best,
        loss_curves=curves,
        examples_to_loss_1=crossing.groupby("batch_size")["examples"].min().dropna(),
        heatmap=reduce.heatmap_table(runs),
        sum_mean_slopes=reduce.sum_mean_best_lr_slopes(best),
        largest_stable_sgd_lr=sgd[sgd["outcome"].isin(["completed", "pruned"])].groupby(["reduction", "batch_size"])["learning_rate"].max(),
        b_simple_curves=reduce.curves(history, at_best, metric="grad/b_simple"),
    )


def science_facts(runs: pd.DataFrame, experiment: str, intervals: dict | None = None) -> ScienceFacts:
    """``intervals``: the bootstrap fits per optimizer when already computed (the workloads' panel of these runs)."""
    optimizers = present(OPTIMIZERS, runs["optimizer"])
    steps = {o: reduce.steps_to_target(runs[runs["optimizer"] == o]) for o in optimizers}
    fits = {o: reduce.fit_hyperbola(st["batch_size"], st["steps"]) if len(st) else reduce.fit_hyperbola([], [])
            for o, st in steps.items()}
    small = {o: st[st["batch_size"] <= SMALL_B_STEPS] for o, st in steps.items() if len(st)}
    best = reduce.best_lr_to_target(runs) if "steps_to_target" in runs else reduce.best_lr(runs)
    sgd = best[(best["optimizer"] == "sgd") & best["stable"]].sort_values("batch_size")
    sgd = sgd[sgd["batch_size"] <= SMALL_B_LR]
    table = reduce.per_seed_steps(runs)
    if intervals is None:
        intervals = {o: reduce.bootstrap_fit(table.loc[o], small_b=SMALL_B_STEPS) for o in steps if len(steps[o])}
    return ScienceFacts(
        experiment=experiment,
        runs=runs,
        optimizers=optimizers,
        steps_to_target=steps,
        fits=fits,
        small_b_steps_slopes={o: reduce.loglog_slope(s["batch_size"], s["steps"]) for o, s in small.items()},
        best_lr=best,
        sgd_lr_slope=reduce.loglog_slope(sgd["batch_size"], sgd["learning_rate"]),
        intervals=intervals,
        n_seeds=int(table.shape[1]),
    )


def noise_facts(default: DefaultFacts) -> NoiseFacts | None:
    """None when the main sweep logged no B_simple."""
    curves = default.b_simple_curves
    if curves.empty:
        return None
    end = curves.sort_values("step").groupby(["optimizer", "reduction", "batch_size"]).tail(1)["mean"]
    return NoiseFacts(experiment=default.experiment, curves=curves,
                      at_init=curves[curves["step"] == 0]["mean"].median(), end_median=end.median())


def reduction_facts(runs: pd.DataFrame, history: pd.DataFrame, experiment: str = "reduction") -> ReductionFacts:
    return ReductionFacts(
        experiment=experiment,
        runs=runs,
        distances=history.merge(runs[["run_id", "comparison", "batch_size"]], on="run_id"),
        final_ratio=runs["final/dist_pair"] / runs["final/dist_control"],
    )


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


# ------------------------------------------------------------------ the reader


def collect(default: str = "default", science: str = "science", progress: bool = True) -> Facts:
    """Load and reduce every experiment of the study; record, not raise, those with no runs.

    ``default`` and ``science`` name the two sweeps' MLflow experiments
    (``--default`` / ``--science`` of the CLIs); the side experiments have
    fixed names. ``progress`` shows a bar while histories are fetched.
    """
    found: dict[str, object] = {}
    missing: dict[str, str] = {}

    def attempt(name, read):
        try:
            found[name] = read()
        except load.MissingRuns as e:
            missing[name] = str(e)

    def read_default():
        runs = load.load_runs(default, hint=f"make sweep GRID={default}")
        return default_facts(runs, load.load_history(runs, default, progress=progress), default)

    def read_reduction():
        runs = load.load_simple("reduction", "reduction", "make reduction")
        hist = load.load_history(runs, "reduction", keys=("dist/pair", "dist/control"), progress=False)
        return reduction_facts(runs, hist)

    attempt("default", read_default)
    def read_science():
        runs = load.load_runs(science, hint=f"make sweep GRID={science}")
        work = workload_of(runs)
        name = HEADLINE if (work == HEADLINE).any() else work.iloc[0]
        fastest = fastest_runs(runs)  # the runs that set steps to the training-loss target: their B_simple
        hist = load.load_history(fastest, f"{science}-b_simple", keys=("grad/b_simple",), progress=progress)
        facts = workload_facts(runs, science, hist)
        panel = facts.panels.get((name, "loss"))  # its bootstrap is the headline's: not computed twice
        found["science"] = science_facts(runs[work == name].reset_index(drop=True), science,
                                         panel.fits if panel is not None and SMALL_B_STEPS == SMALL_B else None)
        return facts

    attempt("workloads", read_science)
    if "workloads" in missing:
        missing["science"] = missing["workloads"]
    def read_generalisation():
        runs = load.load_runs("generalisation", hint="make sweep GRID=generalisation")
        hist = load.load_history(runs, "generalisation", keys=GENERALISATION_KEYS, progress=progress)
        return generalisation_facts(runs, hist)

    attempt("generalisation", read_generalisation)
    attempt("equivalence", lambda: EquivalenceFacts(
        "equivalence", load.load_simple("equivalence", "equivalence", "make equivalence")))
    attempt("reduction", read_reduction)
    attempt("bench", lambda: bench_facts(load.load_simple("benchmarks", "bench", "make bench")))
    attempt("published", lambda: published_facts(load.load_runs("published", hint="make sweep GRID=published")))
    attempt("accumulation", lambda: accumulation_facts(
        load.load_runs("accumulation", hint="make sweep GRID=accumulation")))
    attempt("beta2", lambda: beta2_facts(load.load_runs("beta2", hint="make sweep GRID=beta2")))

    def read_sde():
        runs = load.load_runs("sde", hint="make sweep GRID=sde")
        return sde_facts(runs, load.load_history(runs, "sde", keys=("train/loss",), progress=progress))

    attempt("sde", read_sde)

    def read_branching():
        runs = load.load_runs("branching", hint="make sweep GRID=branching")
        hist = load.load_history(runs, "branching", keys=("train/loss", "grad/b_simple"), progress=progress)
        return branch_facts(runs, hist)

    attempt("branching", read_branching)
    attempt("warmup", lambda: warmup_facts(load.load_runs("warmup", hint="make sweep GRID=warmup")))
    attempt("scaling", lambda: scaling_facts(load.load_runs("scaling", hint="make sweep GRID=scaling")))
    def read_nqm():
        b = found.get("branching")
        at0 = None if b is None or b.b_simple.empty else b.b_simple[b.b_simple["s"] == 0]
        start = None if b is None else b.curves[(b.curves["s"] == 0) & (b.curves["examples"] == 0)]["loss"].median()
        values = (None if at0 is None or at0.empty else float(at0["b_simple"].iloc[0]), start,
                  None if b is None else b.target)
        return nqm_facts(*values) if all(v is not None and np.isfinite(v) and v > 0 for v in values) else None

    found["nqm"] = read_nqm()  # None without the branching reference's B_simple and loss at step 0 (Q9 says so)
    if "default" in found:
        found["noise"] = noise_facts(found["default"])
    return Facts(**found, missing=missing)


# ------------------------------------------------------------- any one sweep

SWEEP_DIMENSIONS = ("optimizer", "reduction", "batch_size", "learning_rate", "seed")  # what the figures tell apart


@dataclass(frozen=True)
class SweepSource:
    """Which runs ``--sweep NAME`` reads, and what varies among them."""

    name: str  # as given: an experiment name or a parent run id
    experiment: str  # the sweep's MLflow experiment (named after its grid file)
    parent: str | None  # the parent run when NAME was one: only that invocation's child runs
    runs: int  # finished child runs read
    varies: dict[str, tuple]  # each of SWEEP_DIMENSIONS: its values in these runs
    pooled: tuple[str, ...]  # other TrainConfig fields that differ between runs: pooled like seeds

    @property
    def label(self) -> str:
        """The folder name of this sweep's figures and report (``report/sweeps/<label>/``)."""
        return self.experiment if self.parent is None else f"{self.experiment}-{self.parent[:8]}"


def resolve_sweep(name: str) -> tuple[str, str | None]:
    """``(experiment, parent run id or None)`` for NAME, an experiment name or a parent run's id."""
    c = load.tracking.client()
    if c.get_experiment_by_name(name) is not None:
        return name, None
    run = None
    if len(name) == 32 and all(ch in "0123456789abcdef" for ch in name):
        from mlflow.exceptions import MlflowException

        try:
            run = c.get_run(name)
        except MlflowException:
            run = None
    if run is None:
        known = sorted(e.name for e in c.search_experiments() if e.name != "Default")
        raise load.MissingRuns(f"no sweep experiment and no run {name!r} in {load.tracking.tracking_uri()} "
                               f"(experiments there: {', '.join(known) or 'none'}); run make sweep GRID={name} first")
    kind = run.data.tags.get("mbstudy.kind", "")
    if kind != "parent":
        raise load.MissingRuns(f"run {name} is not a sweep's parent run (its mbstudy.kind is {kind or 'unset'!r}); "
                               f"give a parent run's id (tag mbstudy.kind=parent) or the sweep's experiment name")
    return c.get_experiment(run.info.experiment_id).name, name


def _pooled(runs: pd.DataFrame) -> tuple[str, ...]:
    from mbstudy.config import TrainConfig

    fields = [f for f in TrainConfig.__dataclass_fields__ if f in runs and f not in SWEEP_DIMENSIONS]
    return tuple(f for f in fields if runs[f].astype(str).nunique() > 1)


def collect_sweep(name: str, progress: bool = True) -> tuple[Facts, SweepSource]:
    """The facts of one sweep (``--sweep NAME``): its runs as ``default`` (loss curves, heatmaps,
    B_simple, time) and, when some run reached its target loss, as ``science`` (steps to target,
    at the reduction the loss curves show). Raises ``load.MissingRuns`` when NAME has no runs."""
    experiment, parent = resolve_sweep(name)
    runs = load.load_runs(experiment, hint=f"make sweep GRID={experiment}")
    if parent is not None:
        runs = runs[runs["parent_run_id"] == parent].reset_index(drop=True)
        if runs.empty:
            raise load.MissingRuns(f"parent run {parent} of sweep {experiment!r} has no finished child runs "
                                   f"(a resumed sweep trains only what its earlier invocations left undone); "
                                   f"give the experiment name {experiment!r} to read all of them")
    default = default_facts(runs, load.load_history(runs, experiment, progress=progress), experiment)
    missing: dict[str, str] = {}
    science = None
    if "steps_to_target" in runs and runs["steps_to_target"].notna().any():
        science = science_facts(runs[runs["reduction"] == default.curve_reduction], experiment)
    else:
        missing["science"] = ("no run reached a target loss (no steps_to_target): give the grid a target_loss "
                              "the runs can reach")
    source = SweepSource(name=name, experiment=experiment, parent=parent, runs=len(runs),
                         varies={d: tuple(sorted(set(runs[d]))) if d in runs else () for d in SWEEP_DIMENSIONS},
                         pooled=_pooled(runs))
    return Facts(default=default, science=science, noise=noise_facts(default), missing=missing), source
