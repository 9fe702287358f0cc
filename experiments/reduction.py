"""The reduction experiment (Q4): sum against mean, trained side by side, against a control.

For each comparison and batch size, three runs start from the same seed:
``a`` (mean reduction), ``b`` (its sum counterpart), and ``control`` (``a`` with
its initial weights perturbed by 1e-7 N(0, 1)). At every evaluation the
relative parameter distances ``||theta_a - theta_b|| / ||theta_a||``
(``dist/pair``) and ``||theta_a - theta_control|| / ||theta_a||``
(``dist/control``) are logged to the MLflow experiment ``reduction``. Training
is chaotic, so rounding grows: a pair is "the same" when its distance stays
at or below the control's.

Comparisons (MNIST-1D, MLP 40-100-100-10):
- ``sgd``: mean at lr against sum at lr/B (equal by algebra; bit-exact for B = 2^k);
- ``momentum``: the same with heavy-ball momentum 0.9;
- ``adam_eps_scaled``: mean at eps against sum at eps * B (equal by algebra);
- ``adam_same_eps``: mean against sum at the same eps (NOT equal: eps is
  compared with sqrt(v), which sum scales by B).

Usage: ``python -m experiments.reduction`` (``make reduction``); a few minutes.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from experiments.engine import provenance, run_writer, store
from mbstudy import load_dataset
from mbstudy.config import TrainConfig
from mbstudy.trees import flatten
from mbstudy.train import train

BATCH_SIZES = (16, 100, 256)  # 100 is not a power of two: rounding, not algebra, differs
BASE = TrainConfig(dataset="mnist1d", hidden=(100, 100), steps=2000, eval_every=100)
PERTURBATION = 1e-7


def comparisons(B: int) -> dict[str, tuple[TrainConfig, TrainConfig]]:
    sgd = dataclasses.replace(BASE, optimizer="sgd", learning_rate=0.1, batch_size=B)
    mom = dataclasses.replace(BASE, optimizer="momentum", learning_rate=0.01, batch_size=B)
    adam = dataclasses.replace(BASE, optimizer="adam", learning_rate=1e-3, eps=1e-8, batch_size=B)
    return {
        "sgd": (sgd, dataclasses.replace(sgd, reduction="sum", learning_rate=sgd.learning_rate / B)),
        "momentum": (mom, dataclasses.replace(mom, reduction="sum", learning_rate=mom.learning_rate / B)),
        "adam_eps_scaled": (adam, dataclasses.replace(adam, reduction="sum", eps=adam.eps * B)),
        "adam_same_eps": (adam, dataclasses.replace(adam, reduction="sum")),
    }


_TRAJECTORIES: dict[str, tuple] = {}  # by configuration hash: the two Adam comparisons share their run a and control


def trajectory(cfg: TrainConfig, data):
    """The run and its parameters at every evaluation; a configuration trained before in this process is not
    trained again (training is deterministic: the same run, bit for bit)."""
    key = cfg.hash()
    if key not in _TRAJECTORIES:
        snaps = []
        result = train(cfg, data, on_eval=lambda step, p: snaps.append(flatten(p)))
        _TRAJECTORIES[key] = (result, snaps)
    return _TRAJECTORIES[key]


def compare(a_cfg: TrainConfig, b_cfg: TrainConfig, data) -> dict[str, np.ndarray]:
    ra, sa = trajectory(a_cfg, data)
    rb, sb = trajectory(b_cfg, data)
    rc, sc = trajectory(dataclasses.replace(a_cfg, init_perturbation=PERTURBATION), data)
    n = min(len(sa), len(sb), len(sc))  # a diverged run stops early
    norm = np.array([np.linalg.norm(s) for s in sa[:n]])
    return {
        "step": ra.history["step"][:n],
        "dist/pair": np.array([np.linalg.norm(x - y) for x, y in zip(sa, sb)])[:n] / norm,
        "dist/control": np.array([np.linalg.norm(x - y) for x, y in zip(sa, sc)])[:n] / norm,
        "train/loss_a": ra.history["train/loss"][:n],
        "train/loss_b": rb.history["train/loss"][:n],
    }


def main(argv=None) -> int:
    from experiments.engine.cli import no_options

    no_options("python -m experiments.reduction", __doc__, argv)
    exp = store.get_or_create_experiment("reduction", __doc__.split("\n\n")[0])
    prov = provenance.provenance()
    data = load_dataset("mnist1d")
    print(f"{'comparison':16s} {'B':>4s} {'final dist/pair':>16s} {'final dist/control':>19s}")
    for B in BATCH_SIZES:
        for name, (a, b) in comparisons(B).items():
            h = compare(a, b, data)
            final = {"final/dist_pair": h["dist/pair"][-1], "final/dist_control": h["dist/control"][-1],
                     "max/dist_pair": h["dist/pair"].max(), "max/dist_control": h["dist/control"].max()}
            params = {"comparison": name, "batch_size": B, "optimizer": a.optimizer,
                      "lr_a": a.learning_rate, "lr_b": b.learning_rate, "eps_a": a.eps, "eps_b": b.eps,
                      "reduction_a": a.reduction, "reduction_b": b.reduction, "perturbation": PERTURBATION,
                      "steps": a.steps, "dataset": a.dataset}
            run_writer.write_run(exp, name=f"{name}-B{B}", params=params, timestamp=0,
                               tags={"mbstudy.kind": "reduction", **prov, "comparison": name},
                               histories={k: (h["step"], h[k]) for k in h if k != "step"},
                               metrics=final, step=int(h["step"][-1]))
            print(f"{name:16s} {B:>4d} {final['final/dist_pair']:>16.2e} {final['final/dist_control']:>19.2e}", flush=True)
    print(f"logged to {store.tracking_uri()}, experiment 'reduction'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
