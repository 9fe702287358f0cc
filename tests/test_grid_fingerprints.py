"""Every configuration of every shipped grid keeps its identity across refactors.

For each grid of ``experiments/grids/`` (and the throughput grid of version 1)
the reference holds, in expansion order, every configuration's ``cfg_hash``
(the tag that marks a run FINISHED: a changed hash would train a stored run
again), and digests of its group hash (without the seed), its prune group
(without the learning rate), its run name and the dispatch order. The reference
was written by the code at 4fe1bb1, before issue 22's refactor.

To rewrite it (only when a change of identity is intended and said so in the
commit): ``MBSTUDY_WRITE_GRID_FINGERPRINTS=1 python -m pytest tests/test_grid_fingerprints.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from experiments.engine import grid as grids
from experiments.engine import dispatch, pruning
from mbstudy.config import FIELDS
from mbstudy.optimizers import OPTIMIZERS

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = Path(__file__).with_name("fingerprints") / "grids.json"
GRIDS = [*grids.available(), "throughput/science_v1"]


def _source(name: str) -> str:
    return str(ROOT / "experiments" / f"{name}.toml") if "/" in name else name


def _digest(lines) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _old_style_name(cfg) -> str:
    """The run name as the code before the refactor wrote it. It showed Adam's betas where they were not their
    defaults, but not eps or momentum; names now show every hyper-parameter of the optimizer's registry entry
    that is not its default (so the sde grid's square-root arms gain ``-eps...``), and lose nothing else."""
    name = cfg.run_name()
    values = cfg.hyper_values()
    for h in OPTIMIZERS[cfg.optimizer].hyper:
        if h.name in ("eps", "momentum") and values[h.name] != FIELDS[h.name].default:
            name = name.replace(f"-{h.tag}{values[h.name]:.6g}", "", 1)
    return name


def identity(name: str) -> dict:
    sweep = grids.load(_source(name))
    # a grid whose learning rate is searched has cells: each one's template (its configuration at the first rate)
    configs = sweep.configs or [c.template for c in sweep.cells]
    return {
        "n": len(configs),
        "cfg_hash": [c.hash() for c in configs],
        "group_hash": _digest(c.hash(without=("seed",)) for c in configs),
        "prune_group": _digest(str(pruning.prune_group(c)) for c in configs),
        "run_name": _digest(_old_style_name(c) for c in configs),
        "dispatch": _digest(c.hash() for c in dispatch.dispatch_order(configs)),
    }


@pytest.fixture(scope="module")
def reference() -> dict:
    if os.environ.get("MBSTUDY_WRITE_GRID_FINGERPRINTS"):
        REFERENCE.write_text(json.dumps({g: identity(g) for g in GRIDS}, indent=0, sort_keys=True) + "\n")
    return json.loads(REFERENCE.read_text())


def test_every_grid_has_a_reference(reference):
    assert sorted(reference) == sorted(GRIDS), "a new grid: add it to the reference (see the module docstring)"


@pytest.mark.parametrize("name", GRIDS)
def test_a_grid_keeps_its_hashes_names_and_order(reference, name):
    now, ref = identity(name), reference[name]
    assert now["n"] == ref["n"], f"{name}: {now['n']} configurations, {ref['n']} before"
    moved = [i for i, (a, b) in enumerate(zip(now["cfg_hash"], ref["cfg_hash"])) if a != b]
    assert not moved, f"{name}: {len(moved)} cfg_hash(es) changed, e.g. configuration {moved[0]}: {ref['cfg_hash'][moved[0]]} -> {now['cfg_hash'][moved[0]]}"
    for key in ("group_hash", "prune_group", "run_name", "dispatch"):
        assert now[key] == ref[key], f"{name}: the {key} of its configurations changed"
