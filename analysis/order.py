"""The order and names of what the study compares, read from the registries and the grids, never typed in the
analysis.

Optimizers come in :data:`mbstudy.optimizers.OPTIMIZERS`' order (the order of registration); one registered
elsewhere (a user's, a test's) comes after them, by name; :data:`mbstudy.optimizers.REFERENCE` is the one the
others are compared against. Workloads and arms are named by the ``label`` their grid file gives them, in the
file's order (:func:`labels_of`), and a grid's ``[meta]`` table holds what the analysis compares the runs with;
targets follow :data:`mbstudy.metrics.TARGETS`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import pandas as pd

from mbstudy.optimizers import OPTIMIZERS, REFERENCE


def optimizers_in(seen: Iterable[str]) -> tuple[str, ...]:
    """The optimizers of ``seen`` in registry order, then any unregistered ones sorted by name."""
    seen = {str(o) for o in seen}
    known = [o for o in OPTIMIZERS if o in seen]
    return tuple(known) + tuple(sorted(seen - set(known)))


def reference_optimizer() -> str:
    """The optimizer the others are compared against (:data:`mbstudy.optimizers.REFERENCE`)."""
    return REFERENCE


def label(optimizer: str) -> str:
    """How tables and figures name an optimizer: its registry label, else its name."""
    o = OPTIMIZERS.get(optimizer)
    return o.label if o is not None else optimizer


def ordered(names: Iterable[str], order: Iterable[str]) -> list[str]:
    """``names`` in ``order``, the others after them sorted."""
    names = set(names)
    order = list(order)
    return [n for n in order if n in names] + sorted(names - set(order))


@functools.cache
def grid(name: str):
    """The sweep definition ``experiments/grids/<name>.toml`` (:class:`experiments.engine.grid.Sweep`), or None
    when there is none (a user's sweep from a path): its labels and ``[meta]`` are then unknown."""
    from experiments.engine import grid as grids

    try:
        return grids.load(name)
    except (grids.GridError, FileNotFoundError, ValueError):
        return None


def meta(name: str) -> dict:
    """The ``[meta]`` table of grid ``name`` (empty without one)."""
    g = grid(name)
    return dict(g.meta) if g is not None else {}


def labels_of(runs: pd.DataFrame, name: str) -> pd.DataFrame:
    """Each run's ``workload`` and ``arm`` label, from the grid ``name`` that made it (matched by ``cfg_hash``, or
    for a searched learning rate by the run's ``prune_group``, its configuration without the rate; "" where the
    grid gives none, or the run is not one of its configurations)."""
    g = grid(name)
    known = g.labels if g is not None else {}
    empty = pd.Series("", index=runs.index)
    pairs = [known.get(h) or known.get(p) or ("", "")
             for h, p in zip(runs.get("cfg_hash", empty), runs.get("prune_group", empty).fillna(""))]
    return pd.DataFrame(pairs, columns=["workload", "arm"], index=runs.index)


def workload_labels(name: str) -> dict[str, str]:
    """``<dataset>-<model>`` -> the label grid ``name`` gives that workload, in the grid's order."""
    g = grid(name)
    out: dict[str, str] = {}
    if g is None:
        return out
    for cfg in g.configs or [c.template for c in g.cells]:
        lab = g.label_of(cfg)[0]
        out.setdefault(f"{cfg.dataset}-{cfg.model}", lab or f"{cfg.dataset}-{cfg.model}")
    return out
