"""A sweep's learning-rate searches as it runs: cells in chains over batch sizes, what to train next, and the
tags a finished search leaves on its runs.

The decisions are :mod:`experiments.engine.search`'s, pure functions of a cell's
finished results; this module keeps a sweep's state of them. The cells that
differ only in the batch size form a **chain**, searched in ascending batch
size: a cell starts (``k0``) from the best rate of the cell before it, the
chain's first from ``start``. Many chains run at once (seeds, optimizers,
workloads); one cell of each at a time.

The state is rebuilt from the store's FINISHED runs when a sweep starts
(:class:`SearchWork`), so rerunning the same command continues where it
stopped: what finished is not trained again, a run killed in flight is
proposed again, and the rounds are those an uninterrupted sweep makes. Then
it follows each result as it comes back (:meth:`SearchWork.finished`).
Executors ask it for runs (:meth:`~SearchWork.ready` and
:meth:`~SearchWork.hand_out`, or :meth:`~SearchWork.take_all`) and give
back each run's :class:`~experiments.engine.lifecycle.RunRecord`. A run that
fails stops its chain for this sweep (the rerun retries it).

When a cell's search is done, every FINISHED run of the cell gets the tags
``search/edge`` (``none``; ``low`` or ``high``: a best rate at ``min`` or
``max``, an edge optimum; ``unreached``: no rate reached a target; several
joined by commas), ``search/edge_detail`` (per target: ``loss=none
val=high``), ``search/rates`` (rates the search tried) and ``search/best_lr``
(where the next batch size starts), and the metrics ``search/rates`` and
``search/at_edge`` (1 for an edge optimum or an unreached target), which
``analysis.load.load_runs`` reads as columns.
"""

from __future__ import annotations

from collections.abc import Mapping

from experiments.engine import pruning, search, store
from experiments.engine.interrupts import store_write
from experiments.engine.lifecycle import RunRecord, stored_record
from mbstudy.metrics import TARGETS

PRIOR_RUNS = 5.0  # runs per cell expected before a cell has finished: 3 in the first round, 2 refining


def result_of(outcome: str, reached: Mapping[str, float | None]) -> dict[str, int]:
    """A run's result as the search reads it: its steps to each target it reached; nothing for a run that
    diverged or failed (``analysis.reduce.reached_steps`` reads runs the same way)."""
    if outcome not in ("completed", "pruned"):
        return {}
    return {t: int(s) for t, s in reached.items() if s is not None}


def edge_label(edges: Mapping[str, str]) -> str:
    """``search/edge``: the sides the cell's best rates touch, over its targets.

    >>> edge_label({"loss": "", "val": "high"}), edge_label({"loss": ""}), edge_label({"loss": "low,high"})
    ('high', 'none', 'low,high')
    """
    parts = {p for v in edges.values() for p in v.split(",") if p}
    return ",".join(p for p in ("low", "high", "unreached") if p in parts) or "none"


class SearchWork:
    """The searches of a sweep's ``cells`` (:class:`~experiments.engine.search.Cell`), from the store's
    ``finished_runs`` on; see the module's docstring. ``bar``: a progress bar whose total it keeps at the runs
    done so far plus those expected."""

    def __init__(self, cells, finished_runs=()):
        self.cells = {pruning.prune_group(c.template): c for c in cells}
        chains: dict[str, list[str]] = {}
        for g, c in self.cells.items():
            chains.setdefault(c.chain, []).append(g)
        self.chains = [sorted(gs, key=lambda g: self.cells[g].template.batch_size) for gs in chains.values()]
        self.chain_of = {g: i for i, gs in enumerate(self.chains) for g in gs}
        self.results: dict[str, dict[int, dict]] = {g: {} for g in self.cells}
        self.runs: dict[str, dict[str, dict]] = {g: {} for g in self.cells}  # FINISHED run id -> its search tags
        for r in finished_runs:
            g = r.data.tags.get("prune_group")
            if g not in self.cells:
                continue
            self.runs[g][r.info.run_id] = {k: v for k, v in r.data.tags.items() if k.startswith("search/")}
            k = self.cells[g].spec.index(_float(r.data.params.get("learning_rate")))
            if k is not None:  # a rate off the lattice (another search's) is kept, and tagged, but not read
                self.results[g].setdefault(k, _stored_result(r))
        self.k0: dict[str, int] = {}
        self.state: dict[str, search.CellState] = {}
        self.pending: dict[str, list] = {}  # each active cell's unfinished rates: (k, config, hash, program key)
        self.where: dict[str, tuple[str, int]] = {}  # config hash -> (cell, k)
        self.handed: set[str] = set()
        self.failed: set[str] = set()
        self.at = [0] * len(self.chains)  # each chain's active cell
        self.reused = 0  # finished runs of the store that the searches read
        self.trained = 0  # runs ended in this sweep
        self.bar = None
        for i in range(len(self.chains)):
            self._advance(i)
        self.reused = sum(k in self.results[g] for g, s in self.state.items() for k in s.tried)

    # ------------------------------------------------------------ handing out runs

    def ready(self) -> list:
        """The configurations the searches want trained now and nobody is training, chain by chain, each cell's
        likely best rate first."""
        return [cfg for _, cfg in self.ready_by_program()]

    def ready_by_program(self) -> list[tuple]:
        """:meth:`ready` as ``(program key, configuration)`` pairs (the key computed once per configuration)."""
        return [(key, cfg) for i, gs in enumerate(self.chains) if self.at[i] < len(gs)
                for _, cfg, h, key in self.pending[gs[self.at[i]]] if h not in self.handed and h not in self.failed]

    def hand_out(self, cfg) -> None:
        self.handed.add(cfg.hash())

    def take_all(self) -> list:
        cfgs = self.ready()
        for cfg in cfgs:
            self.hand_out(cfg)
        return cfgs

    def finished(self, cfg, record) -> None:
        """A run handed out has ended (``record``: its :class:`~experiments.engine.lifecycle.RunRecord`)."""
        h = cfg.hash()
        self.handed.discard(h)
        self.trained += 1
        g, k = self.where[h]
        if record.status == "failed":
            self.failed.add(h)
        else:
            self.results[g][k] = result_of(record.outcome, record.reached)
            if record.run_id:
                self.runs[g].setdefault(record.run_id, {})
            i = self.chain_of[g]
            first = self.at[i]
            self._advance(i)
            for done in self.chains[i][first:self.at[i]]:
                self.tag(done)
        if self.bar is not None:
            self.bar.total = self.trained + round(self.expected_left())

    def read_back(self, cfgs, experiment_id: str) -> None:
        """:meth:`finished` for each of ``cfgs`` from the store (an executor that does not return records)."""
        for cfg in cfgs:
            done = [r for r in store.runs_of_config(experiment_id, cfg.hash()) if r.info.status == "FINISHED"]
            self.finished(cfg, stored_record(done[0]) if done else RunRecord(cfg.hash(), "failed"))

    def _advance(self, i: int) -> None:
        """Replay chain ``i``'s active cell from its results; while it is done, move to the next batch size."""
        chain = self.chains[i]
        while self.at[i] < len(chain):
            g = chain[self.at[i]]
            cell = self.cells[g]
            if g not in self.k0:
                prev = self.cells[chain[self.at[i] - 1]] if self.at[i] else None
                self.k0[g] = 0 if prev is None else cell.spec.nearest(prev.spec.rate(self.state[chain[self.at[i] - 1]].best))
            state = self.state[g] = search.replay(cell.spec, self.k0[g], self.results[g], cell.targets)
            ks = sorted(state.pending, key=lambda k: (abs(k - self.k0[g]), k))
            self.pending[g] = [(k, cfg, cfg.hash(), cfg.program_key()) for k in ks for cfg in (cell.config(k),)]
            self.where.update({h: (g, k) for k, _, h, _ in self.pending[g]})
            if not state.done:
                return
            self.at[i] += 1

    # ------------------------------------------------------------------- the tags

    def tags_of(self, g: str) -> dict[str, str]:
        """The tags a done cell's runs carry (see the module's docstring)."""
        s, cell = self.state[g], self.cells[g]
        return {"search/edge": edge_label(s.edges), "search/rates": str(len(s.tried)),
                "search/edge_detail": " ".join(f"{t}={v or 'none'}" for t, v in s.edges.items()),
                "search/best_lr": f"{cell.spec.rate(s.best):.3g}"}

    def tag(self, g: str) -> int:
        """Write the tags (and metrics) of done cell ``g`` on its FINISHED runs that lack them; how many runs."""
        from mlflow.entities import Metric, RunTag

        want = self.tags_of(g)
        metrics = {"search/rates": float(want["search/rates"]), "search/at_edge": float(want["search/edge"] != "none")}
        stale = [run_id for run_id, tags in self.runs[g].items() if tags != want]
        for run_id in stale:
            with store_write():
                store.client().log_batch(run_id, tags=[RunTag(k, v) for k, v in want.items()],
                                         metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
                self.runs[g][run_id] = dict(want)
        return len(stale)

    def tag_done(self) -> int:
        """Write what a sweep killed between a cell's last run and its tags left out; how many runs."""
        return sum(self.tag(g) for g, s in self.state.items() if s.done)

    # ----------------------------------------------------------- how far it got

    def complete(self) -> bool:
        return all(a == len(gs) for a, gs in zip(self.at, self.chains))

    def done_cells(self) -> list[str]:
        return [g for g, s in self.state.items() if s.done]

    def expected_per_cell(self) -> float:
        """Runs a cell's search is expected to take: :data:`PRIOR_RUNS`, moved toward the mean of the done cells."""
        tried = [len(self.state[g].tried) for g in self.done_cells()]
        return (PRIOR_RUNS + sum(tried)) / (1 + len(tried))

    def expected_left(self) -> float:
        """Runs still expected (:meth:`expected_by_cell`)."""
        return sum(self.expected_by_cell().values())

    def expected_by_cell(self) -> dict[str, float]:
        """Runs still expected per cell: an active cell's (at least its unfinished rates) and every later cell's;
        a chain stopped by a failed run expects none in this sweep."""
        per_cell, out = self.expected_per_cell(), {}
        for i, chain in enumerate(self.chains):
            if self.at[i] == len(chain) or self.blocked(i):
                continue
            g = chain[self.at[i]]
            finished = sum(k in self.results[g] for k in self.state[g].tried)
            out[g] = max(len(self.pending[g]), per_cell - finished)
            out.update({later: per_cell for later in chain[self.at[i] + 1:]})
        return out

    def blocked(self, i: int) -> bool:
        """Whether chain ``i`` waits on a run that failed in this sweep."""
        return self.at[i] < len(self.chains[i]) and any(h in self.failed for _, _, h, _ in self.pending[self.chains[i][self.at[i]]])

    def summary(self) -> dict:
        """What the sweep's summary prints and its parent run records (``search/...`` metrics); ``edges``: a line
        for each edge optimum."""
        done = self.done_cells()
        tags = {g: self.tags_of(g) for g in done}
        edge = [g for g in done if tags[g]["search/edge"] != "none"]
        rates = sum(len(self.state[g].tried) for g in done)
        return {"cells": len(self.cells), "done": len(done), "rates": rates, "edge": len(edge),
                "blocked": sum(self.blocked(i) for i in range(len(self.chains))),
                "per_cell": rates / len(done) if done else float("nan"),
                "edges": [f"{self.cells[g].name}: {tags[g]['search/edge_detail']} (best {tags[g]['search/best_lr']}, "
                          f"range {self.cells[g].spec.min:g} to {self.cells[g].spec.max:g})" for g in edge]}


def _float(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def _stored_result(run) -> dict[str, int]:
    m = run.data.metrics
    return result_of(run.data.tags.get("outcome", ""), {t: m.get(metric) for t, metric in TARGETS.items()})
