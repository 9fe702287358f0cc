"""Run everything the report uses, step after step, with the progress and an ETA across all steps.

``python -m experiments.study`` (``make study``) runs the linear baselines, the sweeps and the side
experiments of the full study (Q1–Q8); ``--extended`` (``make study-extended``)
adds Q9's three sweeps (:data:`EXTENDED`: branches from checkpoints, batch-size
warm-up, data and width scaling), the CNN's ablation against the MNIST-1D
paper's 94% (initialisation × batch order), Seesaw and Muon and the language
model (the 2024-25 claims), so run after ``make study`` it trains only those; ``--quick`` (``make study-quick``) the same
steps, Q9's included, with fewer seeds and batch sizes and without the CNN workload
(:data:`QUICK`), which gives every section of the report with wider intervals
in a fraction of the time. Each
step is a command of its own (``python -m experiments.sweep GRID ...``), run in
turn (the sweeps in this process, :func:`call`); its own progress bar shows inside the step, and between steps a line
says how far the study is and about how long is left.

The ETA weighs the steps by what each is expected to take. A sweep's first
guess comes from its grid: the runs the store does not hold yet, each by the
cost model of ``experiments/engine/cost.py`` (steps, batch size, the model's
FLOPs, evaluations), over the worker processes, so a fresh clone gets a
sensible ETA; the other steps' come from how long they took the last time the
study ran on this machine (``.cache/study-times.json``, or
``MBSTUDY_STUDY_TIMES``; written as the steps finish), and :data:`FIRST_GUESS`
(seconds measured on two cores) before that. Between steps, the pace of the
steps done so far (seconds taken against seconds expected) corrects the rest,
shrunk towards the guesses while little is done (:func:`pace`), so one slow
first step does not triple the ETA. Every step is resumable (a sweep skips
the runs its store holds), so a stopped study is continued by running the same
command again. A step that fails stops the study with its exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMES = Path(os.environ.get("MBSTUDY_STUDY_TIMES") or ROOT / ".cache" / "study-times.json")

# (name, arguments of `python -m`); the full study
FULL = [
    ("baselines", ["experiments.baselines"]),
    ("sweep default", ["experiments.sweep", "default"]),
    ("sweep science", ["experiments.sweep", "science"]),
    ("sweep generalisation", ["experiments.sweep", "generalisation"]),
    ("sweep seeds", ["experiments.sweep", "seeds"]),
    ("sweep published", ["experiments.sweep", "published"]),
    ("sweep accumulation", ["experiments.sweep", "accumulation"]),
    ("sweep beta2", ["experiments.sweep", "beta2"]),
    ("sweep sde", ["experiments.sweep", "sde"]),
    ("equivalence", ["experiments.equivalence"]),
    ("reduction", ["experiments.reduction"]),
    ("bench", ["experiments.bench"]),
]

# Q9, the CNN's gap to the MNIST-1D paper's 94%, the 2024-25 claims and the language model with its Q5, Q8 and Q9
# (make study-extended: the full study, then these)
EXTENDED = [
    *FULL,
    ("sweep branching", ["experiments.sweep", "branching"]),
    ("sweep branching_adam", ["experiments.sweep", "branching_adam"]),
    ("sweep warmup", ["experiments.sweep", "warmup"]),
    ("sweep warmup_adam", ["experiments.sweep", "warmup_adam"]),
    ("sweep warmup_placed", ["experiments.sweep", "warmup_placed"]),
    ("sweep scaling", ["experiments.sweep", "scaling"]),
    ("sweep scaling_adam", ["experiments.sweep", "scaling_adam"]),
    ("sweep scaling_floor", ["experiments.sweep", "scaling_floor"]),
    ("sweep scaling_width", ["experiments.sweep", "scaling_width"]),
    ("sweep cnn_ablation", ["experiments.sweep", "cnn_ablation"]),
    ("sweep teacher_momentum", ["experiments.sweep", "teacher_momentum"]),
    ("sweep seesaw", ["experiments.sweep", "seesaw"]),
    ("sweep muon", ["experiments.sweep", "muon"]),
    ("sweep lm", ["experiments.sweep", "lm"]),
    ("sweep lm_warmup", ["experiments.sweep", "lm_warmup"]),
    ("sweep lm_accumulation", ["experiments.sweep", "lm_accumulation"]),
    ("sweep lm_beta2", ["experiments.sweep", "lm_beta2"]),
    ("sweep lm_branching", ["experiments.sweep", "lm_branching"]),
    ("sweep lm_warmup_placed", ["experiments.sweep", "lm_warmup_placed"]),
]

# the quick study: the same steps on fewer seeds and batch sizes, and the MLP workloads only (the CNN is most of
# the science and generalisation sweeps' time; the paper's recipe too, whose CNN the ablation trains), Q8's sweeps on one or two seeds (accumulation: SGD), Q9's on two seeds
# and fewer checkpoints, batch sizes and sizes (the data-size sweeps on their three middle rates), the CNN's ablation on one seed and its two PyTorch-initialised arms
# (the paper's code's and the shuffled one), momentum on the teacher on one seed, Seesaw with Adam on two seeds, Muon on two seeds and three batch sizes,
# the language model with Adam on one seed to an easier target (its Q8 and Q9 sweeps likewise, the branches at the
# reference's first two branch points, at two batch sizes beside the reference's, on four of the five
# rates); every section of the report, with wider intervals
QUICK = [
    ("baselines", ["experiments.baselines"]),
    ("sweep default", ["experiments.sweep", "default", "--set", "seed=0", "--set", "batch_size=[1, 16, 64]"]),
    ("sweep science", ["experiments.sweep", "science", "--only", "model=mlp", "--set", "seed=[0, 1]",
                       "--set", "batch_size=[4, 16, 64, 256]"]),
    ("sweep generalisation", ["experiments.sweep", "generalisation", "--only", "model=mlp", "--set", "seed=0",
                              "--set", "batch_size=[8, 512]"]),
    ("sweep seeds", ["experiments.sweep", "seeds"]),
    ("sweep published", ["experiments.sweep", "published", "--set", "seed=0", "--only", "model=mlp"]),
    ("sweep accumulation", ["experiments.sweep", "accumulation", "--set", "seed=0", "--only", "optimizer=sgd"]),
    ("sweep beta2", ["experiments.sweep", "beta2", "--set", "seed=0", "--set", "batch_size=[4, 256]"]),
    ("sweep sde", ["experiments.sweep", "sde", "--set", "seed=[0, 1]"]),
    ("equivalence", ["experiments.equivalence"]),
    ("reduction", ["experiments.reduction"]),
    ("bench", ["experiments.bench", "--smallest"]),
    ("sweep branching", ["experiments.sweep", "branching", "--set", "seed=[0, 1]",
                         "--only", "batch_size=[2, 8, 32, 128, 512]",
                         "--only", 'schedule=["", "128x32@0.316", "704x32@0.316"]']),
    ("sweep branching_adam", ["experiments.sweep", "branching_adam", "--set", "seed=[0, 1]",
                              "--only", "batch_size=[2, 32, 512]", "--only", 'schedule=["", "512x32@0.01"]']),
    ("sweep warmup", ["experiments.sweep", "warmup", "--set", "seed=[0, 1]", "--only", "batch_size=[32, 64, 128, 256]"]),
    ("sweep warmup_adam", ["experiments.sweep", "warmup_adam", "--set", "seed=[0, 1]",
                           "--only", "batch_size=[32, 64, 128, 256]"]),
    ("sweep warmup_placed", ["experiments.sweep", "warmup_placed", "--set", "seed=[0, 1]"]),
    ("sweep scaling", ["experiments.sweep", "scaling", "--set", "seed=[0, 1]", "--set", "hidden=[100, 100]",
                       "--only", "n_train=[1000, 4000]", "--only", "batch_size=[32, 128, 512]",
                       "--only", "learning_rate=[0.1, 0.316, 1.0]"]),
    ("sweep scaling_adam", ["experiments.sweep", "scaling_adam", "--set", "seed=[0, 1]", "--set", "hidden=[100, 100]",
                            "--only", "n_train=[1000, 4000]", "--only", "batch_size=[32, 128, 512]",
                            "--only", "learning_rate=[0.00316, 0.01, 0.0316]"]),
    ("sweep scaling_floor", ["experiments.sweep", "scaling_floor", "--set", "steps=1000",
                             "--only", "hidden=[[25, 25], [100, 100]]"]),
    ("sweep scaling_width", ["experiments.sweep", "scaling_width", "--set", "seed=[0, 1]",
                             "--only", "hidden=[[25, 25], [100, 100]]", "--only", "batch_size=[32, 128, 512]"]),
    ("sweep cnn_ablation", ["experiments.sweep", "cnn_ablation", "--set", "seed=0", "--only", "init=torch_default"]),
    ("sweep teacher_momentum", ["experiments.sweep", "teacher_momentum", "--set", "seed=0",
                                "--set", "batch_size=[16, 64, 256]"]),
    ("sweep seesaw", ["experiments.sweep", "seesaw", "--set", "seed=[0, 1]", "--only", "optimizer=adam"]),
    ("sweep muon", ["experiments.sweep", "muon", "--set", "seed=[0, 1]", "--set", "batch_size=[16, 64, 256]"]),
    ("sweep lm", ["experiments.sweep", "lm", "--set", "seed=0", "--only", "optimizer=adam", "--set",
                  "batch_size=[8, 32, 128]", "--set", "target_val=2.5"]),
    ("sweep lm_warmup", ["experiments.sweep", "lm_warmup", "--set", "seed=0", "--set", "target_val=2.5"]),
    ("sweep lm_accumulation", ["experiments.sweep", "lm_accumulation", "--set", "seed=0", "--set", "target_val=2.5",
                               "--only", "optimizer=adam", "--only", "batch_size=32"]),
    ("sweep lm_beta2", ["experiments.sweep", "lm_beta2", "--set", "seed=0", "--set", "target_val=2.5",
                        "--only", "batch_size=8", "--only", "optimizer=adam"]),
    ("sweep lm_branching", ["experiments.sweep", "lm_branching", "--set", "seed=0",
                            "--only", "batch_size=[16, 32, 64]", "--only", 'schedule=["", "32x32@0.0178"]',
                            "--only", "learning_rate=[0.01, 0.0178, 0.0316, 0.0562]"]),
    ("sweep lm_warmup_placed", ["experiments.sweep", "lm_warmup_placed", "--set", "seed=0", "--set", "target_val=2.5"]),
]

# seconds of the steps that are not sweeps on two cores (Intel Xeon, this project's CI machine), until this
# machine has its own; a sweep's guess is its grid's (sweep_guess)
FIRST_GUESS = {
    "full": {"baselines": 15, "equivalence": 30, "reduction": 30, "bench": 420},
    "extended": {"baselines": 15, "equivalence": 30, "reduction": 30, "bench": 420},
    "quick": {"baselines": 15, "equivalence": 30, "reduction": 30, "bench": 40},
}
# seconds a sweep takes before its first run: Python, JAX, the store, the worker processes (a study's later sweeps
# reuse its workers and start in less; the pace between steps corrects the ETA for it)
SWEEP_START = 10.0
PRIOR_WEIGHT = 0.25  # the guesses' weight in the pace between steps, as a share of the study's expected seconds


def clock(seconds: float) -> str:
    """``12m03s`` (or ``45s``).

    >>> clock(723.4), clock(45.0)
    ('12m03s', '45s')
    """
    s = int(round(seconds))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _load_times() -> dict:
    try:
        return json.loads(TIMES.read_text())
    except (OSError, ValueError):
        return {}


def _save_time(mode: str, name: str, seconds: float) -> None:
    times = _load_times()
    times.setdefault(mode, {})[name] = round(seconds, 1)
    TIMES.parent.mkdir(parents=True, exist_ok=True)
    tmp = TIMES.with_suffix(".tmp")
    tmp.write_text(json.dumps(times, indent=1, sort_keys=True))
    tmp.replace(TIMES)


def _sweep_args(args: list[str]) -> tuple[str, list[str], list[str]] | None:
    """(grid, --set values, --only values) of a ``python -m experiments.sweep`` step, else None."""
    if args[0] != "experiments.sweep":
        return None
    rest = args[2:]
    values = {flag: [rest[i + 1] for i in range(len(rest) - 1) if rest[i] == flag] for flag in ("--set", "--only")}
    return args[1], values["--set"], values["--only"]


def sweep_guess(args: list[str], workers: int | None = None) -> float:
    """Seconds a sweep step is expected to take: the cost model (``cost.expected_cost``) of each configuration
    its store does not hold FINISHED yet (read-only; a store not yet made holds none), over the workers."""
    from experiments.engine import cost, grid as grids, store
    from experiments.engine.progress import PARALLEL

    name, sets, only = _sweep_args(args)
    try:
        sweep = grids.load(name, sets, only)
    except grids.GridError:  # the step itself will say what is wrong
        return 60.0
    past: list = []
    if store.store_exists():
        try:
            reader = store.reader()
            exp = reader.get_experiment_by_name(sweep.name)
            if exp is not None:
                past = store.search_all(reader, exp.experiment_id,
                                        "tags.`mbstudy.kind` = 'run' and attributes.status = 'FINISHED'")
        except Exception:  # noqa: BLE001 - a guess is never worth failing for
            past = []
    if sweep.cells:  # a searched grid: each cell's template, as many times as the search expects runs for it
        from experiments.engine.chains import SearchWork

        work = SearchWork(sweep.cells, past)
        todo = [c.template for g, c in work.cells.items() for _ in range(round(work.expected_by_cell().get(g, 0)))]
    else:
        done = {r.data.tags.get("cfg_hash") for r in past}
        todo = [c for c in sweep.configs if c.hash() not in done]
    if not todo:
        return 2 * SWEEP_START  # loading the grid and finding every run done
    workers = workers or os.cpu_count() or 1
    return SWEEP_START + sum(cost.expected_cost(c, prune=sweep.prune) for c in todo) / (PARALLEL * workers)


def expected(mode: str, steps) -> dict[str, float]:
    """Seconds each step is expected to take: a sweep's from its grid (:func:`sweep_guess`), another step's
    from its last time here, else :data:`FIRST_GUESS`."""
    last = _load_times().get(mode, {})
    return {name: sweep_guess(args) if _sweep_args(args) else float(last.get(name, FIRST_GUESS[mode].get(name, 60)))
            for name, args in steps}


def pace(elapsed: float, done: float, total: float) -> float:
    """Seconds taken per second expected so far, shrunk towards 1 by :data:`PRIOR_WEIGHT` of the study's total.

    >>> round(pace(720, 250, 3000), 2), round(pace(2400, 2000, 3000), 2)   # one slow step; most of the study
    (1.47, 1.15)
    """
    w = PRIOR_WEIGHT * total
    return (elapsed + w) / (done + w)


def _in_process_ok() -> bool:
    """Whether this process may run a sweep itself: only under ``python -m experiments.study``. A sweep's workers
    are spawned, and a spawned process imports the main module again; a script that calls :func:`run` without an
    ``if __name__ == "__main__"`` guard would start its study again in every worker."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec is not None and spec.name == "experiments.study"


def call(args: list[str]) -> int:
    """Run one step: a sweep in this process (``experiments.sweep.main``: Python, JAX and MLflow are imported once
    for the whole study, not once per sweep, about 4 s a step on two cores; its workers are the study's pool,
    ``executors.local.kept_pool``, about 1.6 s more) when it is ``python -m experiments.study``
    (:func:`_in_process_ok`), any other step as ``python -m`` (they set XLA's flags before importing JAX); returns
    its exit status."""
    if args[0] != "experiments.sweep" or not _in_process_ok():
        return subprocess.call([sys.executable, "-m", *args], cwd=ROOT)
    from experiments import sweep

    try:
        return int(sweep.main(args[1:]) or 0)
    except SystemExit as e:  # argparse's own exit
        return e.code if isinstance(e.code, int) else 1
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception:  # noqa: BLE001 - a step that fails stops the study with its traceback, as its process would
        traceback.print_exc()
        return 1


# steps that compute on one core and time nothing: two in a row run at once, the second in the background (its output
# shown when its turn comes), which saves about 40 s of the quick study on two cores
ONE_CORE = {"equivalence", "reduction"}


class _Background:
    """A step's process started ahead of its turn: its output kept in a file, its own duration measured."""

    def __init__(self, args: list[str]):
        import tempfile
        import threading

        self.log = tempfile.TemporaryFile("w+")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT, text=True)
        self.took = None
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()

    def _wait(self):
        self.proc.wait()
        self.took = time.perf_counter() - self.t0

    def result(self, out) -> tuple[int, float]:
        """Wait for it, print what it printed; (its exit status, its seconds)."""
        self.thread.join()
        self.log.seek(0)
        print(self.log.read(), end="", file=out, flush=True)
        self.log.close()
        return self.proc.returncode, self.took

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()
        self.log.close()


def run(mode: str, steps, out=sys.stderr) -> int:
    """Run ``steps`` in turn (two :data:`ONE_CORE` steps in a row at once); returns 0, or the exit status of the
    first step that failed."""
    guess = expected(mode, steps)
    print(f"study ({mode}): {len(steps)} steps, about {clock(sum(guess.values()))} expected", file=out, flush=True)
    from experiments.engine.executors.local import kept_pool

    # the sweeps run in this process (call) share one pool of workers, started by the first
    with kept_pool():
        return _run_steps(mode, steps, guess, out)


def _run_steps(mode: str, steps, guess: dict[str, float], out) -> int:
    total = sum(guess.values())
    t_start = time.perf_counter()
    done_weight = 0.0
    ahead: dict[str, _Background] = {}
    try:
        for i, (name, args) in enumerate(steps, 1):
            print(f"\n=== study step {i}/{len(steps)}: {name}  (python -m {' '.join(args)})"
                  + (" (started beside the step before)" if name in ahead else ""), file=out, flush=True)
            t0 = time.perf_counter()
            if name in ahead:
                status, took = ahead.pop(name).result(out)
            else:
                if name in ONE_CORE and i < len(steps) and steps[i][0] in ONE_CORE and steps[i][0] not in ahead:
                    ahead[steps[i][0]] = _Background(steps[i][1])
                status = call(args)
                took = time.perf_counter() - t0
            if status != 0:
                print(f"study: step {name} failed (exit {status}) after {clock(took)}; fix it and rerun the same "
                      "command: every finished step's runs are kept and skipped", file=out, flush=True)
                return status
            _save_time(mode, name, took)
            done_weight += guess[name]
            elapsed = time.perf_counter() - t_start
            left = sum(guess[n] for n, _ in steps[i:])
            bar = "#" * round(20 * done_weight / total) + "." * (20 - round(20 * done_weight / total))
            print(f"=== study [{bar}] {i}/{len(steps)} steps, {name} took {clock(took)}; {clock(elapsed)} elapsed"
                  + (f", about {clock(left * pace(elapsed, done_weight, total))} left" if i < len(steps) else ""),
                  file=out, flush=True)
    finally:  # a step that failed, Ctrl-C or SIGTERM: no step left running behind the study
        for b in ahead.values():
            b.stop()
    print(f"study ({mode}): done in {clock(time.perf_counter() - t_start)}; `make report` writes report/REPORT.md",
          file=out, flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.study", description=__doc__.split("\n\n")[0])
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="fewer seeds and batch sizes: every section, wider intervals")
    group.add_argument("--extended", action="store_true", help="the full study and Q9's sweeps (branching, warm-up, "
                       "data and width scaling), and the CNN's ablation against the paper's 94%%")
    ap.add_argument("--list", action="store_true", help="print the steps and their expected times, run nothing")
    a = ap.parse_args(argv)
    mode, steps = ("quick", QUICK) if a.quick else ("extended", EXTENDED) if a.extended else ("full", FULL)
    if a.list:
        for (name, args), sec in zip(steps, expected(mode, steps).values()):
            print(f"{name:22s} about {clock(sec):>7s}   python -m {' '.join(args)}")
        return 0
    from experiments.engine.interrupts import interrupted_status, sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():  # SIGTERM as Ctrl-C: a step started in the background is stopped too
            return run(mode, steps)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Terminated)
        print("\nstudy: interrupted; rerun the same command to continue (finished runs are skipped)", file=sys.stderr)
        return interrupted_status(e)


if __name__ == "__main__":
    sys.exit(main())
