"""The adaptive learning-rate search: which rates a cell tries next, from the results it has.

A **cell** is a configuration without its learning rate (a prune group: the
workload, optimizer, batch size, seed, ...). Its rates lie on one log lattice,
``rate(k) = start * 10**(k * refine)`` rounded to 3 significant digits (the
spelling the shipped grids use: 0.1, 0.178, 0.316, ...), so a rate reached from
either side is the same float and the same ``cfg_hash``; ``k`` is an int, and
``min``/``max`` are rounded inward onto the lattice (``Spec.bounds``).

A cell's search is a sequence of **rounds**; each is proposed once every run
of the previous one has finished (:func:`next_round`):

1. the start ``k0`` (the best rate of the chain's previous batch size, or
   ``start``) and its neighbours one ``step`` either side;
2. while, for some target, no tried rate lies below the lowest best rate (or
   above the highest), the next rate one ``step`` beyond it on that side,
   clipped to ``min``/``max`` (the coarse bracket: every tried rate that is not
   a best one is strictly worse, so a tried rate on each side brackets it);
3. then each best rate's untried neighbours at ``refine`` spacing (those
   between two tied best rates first), until every best rate of every target
   has both lattice neighbours tried (or is at ``min``/``max``): the final
   best is bracketed at the refined spacing too. (A target that no rate
   reached has every tried rate "best": its coarse bracket runs from ``min``
   to ``max``, and it is not refined.)

"Best" is per target (``loss``, ``val``): the fewest steps to it. A run that
did not reach a target (out of budget, diverged, or pruned before it) is worse
than any that did; ties are all best. The search reads only which rates are
best and which were tried, facts that pruning does not change: a pruned run
was given up after another run of its cell had reached the target in fewer
steps, so it is not best whether it counts as "not reached" or by the steps
it would have taken. And :func:`replay` rebuilds the rounds from the finished
results alone (every round from the results of the rounds before it), so the
rates a search tries are the same whichever runs finished first, after a kill
and a resume, or on other workers.

A best rate at ``min`` or ``max`` is an **edge optimum**; a target that no
tried rate reached is ``unreached`` (its search spans ``min`` to ``max``).
:func:`simulate` runs a search against any function of the rate:

>>> spec = Spec(start=0.1)
>>> [spec.rate(k) for k in (-2, -1, 0, 1, 2)]
[0.0316, 0.0562, 0.1, 0.178, 0.316]
>>> v_shaped = lambda k: {"loss": 100 + 10 * abs(k - 3)}  # the best rate is k = 3 (0.562)
>>> s = simulate(spec, 0, v_shaped, ("loss",))
>>> s.rounds, s.best, spec.rate(s.best), s.edges
(((-2, 0, 2), (4,), (6,), (3,)), 3, 0.562, {'loss': ''})
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

Result = Mapping[str, "int | None"]  # target -> steps to it; None or absent: not reached

KEYS = {  # every key of a [search.learning_rate] table, what it means, and its default (None: required)
    "start": ("the first rate of every chain's first batch size (rounded to 3 significant digits)", None),
    "step": ("decades between the rates tried while bracketing; a whole multiple of refine", 0.5),
    "refine": ("decades between the rates tried around the best once it is bracketed (0.01 to 1)", 0.25),
    "min": ("the smallest rate tried (rounded up onto the lattice)", 1e-6),
    "max": ("the largest rate tried (rounded down onto the lattice)", 100.0),
}


@dataclasses.dataclass(frozen=True)
class Spec:
    """One cell's search settings (:data:`KEYS`); :func:`make_spec` builds a checked one from TOML tables."""

    start: float
    step: float = 0.5
    refine: float = 0.25
    min: float = 1e-6
    max: float = 100.0

    @property
    def stride(self) -> int:
        """``step`` in lattice units."""
        return round(self.step / self.refine)

    def rate(self, k: int) -> float:
        """The ``k``-th rate of the lattice, spelled to 3 significant digits."""
        return float(f"{self.start * 10.0 ** (k * self.refine):.3g}")

    def nearest(self, rate: float) -> int:
        """The lattice index nearest ``rate`` (in log), within the bounds."""
        lo, hi = self.bounds()
        return min(hi, max(lo, round(math.log10(rate / self.start) / self.refine)))

    def index(self, rate: float) -> int | None:
        """``k`` with ``rate(k) == rate``, or None for a rate off the lattice (or outside the bounds)."""
        if not (isinstance(rate, (int, float)) and rate > 0 and math.isfinite(rate)):
            return None
        k = round(math.log10(rate / self.start) / self.refine)
        lo, hi = self.bounds()
        return k if lo <= k <= hi and self.rate(k) == rate else None

    def bounds(self) -> tuple[int, int]:
        """The lowest and highest lattice index within ``[min, max]``."""
        to_k = lambda r: math.log10(r / self.start) / self.refine  # noqa: E731
        return math.ceil(to_k(self.min) - 1e-9), math.floor(to_k(self.max) + 1e-9)


def make_spec(tables: list[tuple[str, Any]]) -> tuple[Spec | None, list[str]]:
    """A checked :class:`Spec` from ``(where, table)`` pairs, later ones overriding earlier keys
    (``[("search.learning_rate", {...}), ("arms[1].search.learning_rate", {...})]``); and the problems, each
    naming the key, the value and the fix.

    >>> make_spec([("search.learning_rate", {"start": 0.1, "step": 0.6})])[1]
    ['search.learning_rate.step: expected a whole multiple of refine (0.25): 0.25, 0.5, 0.75, ...; received 0.6']
    """
    values: dict[str, tuple[str, float]] = {}  # key -> (where it was set, value)
    problems = []
    for where, table in tables:
        if not isinstance(table, dict):
            problems.append(f"{where}: expected a table [{where}] of key = value lines ({', '.join(KEYS)}); "
                            f"received {type(table).__name__} {table!r:.60}")
            continue
        for key, value in table.items():
            if key not in KEYS:
                near = difflib.get_close_matches(key, KEYS, n=1)
                problems.append(f"{where}.{key}: unknown key" + (f" (did you mean {near[0]!r}?)" if near else "")
                                + f"; expected {', '.join(KEYS)}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
                problems.append(f"{where}.{key}: expected a positive number ({KEYS[key][0]}); received {value!r:.60}")
            else:
                values[key] = (where, float(value))
    if problems:
        return None, problems
    if "start" not in values:
        where = tables[-1][0] if tables else "search.learning_rate"
        return None, [f"{where}.start: required ({KEYS['start'][0]}); set it in [search.learning_rate], "
                      "or in every workload's or arm's [workloads.search.learning_rate] / [arms.search.learning_rate]"]
    spec = Spec(**{k: values[k][1] if k in values else default for k, (_, default) in KEYS.items()})

    def at(key: str) -> str:
        return f"{values[key][0] if key in values else 'search.learning_rate'}.{key}"

    if not 0.01 <= spec.refine <= 1:
        problems.append(f"{at('refine')}: expected 0.01 to 1 decade (finer rates would share a 3-digit spelling); "
                        f"received {spec.refine}")
    elif spec.step < spec.refine or abs(spec.step / spec.refine - round(spec.step / spec.refine)) > 1e-9:
        problems.append(f"{at('step')}: expected a whole multiple of refine ({spec.refine:g}): "
                        f"{spec.refine:g}, {2 * spec.refine:g}, {3 * spec.refine:g}, ...; received {spec.step:g}")
    if spec.min >= spec.max:
        problems.append(f"{at('min')}, {at('max')}: expected min < max; received min = {spec.min:g}, "
                        f"max = {spec.max:g}; swap or widen them")
    elif not spec.min <= spec.start <= spec.max:
        problems.append(f"{at('start')}: expected a rate from min ({spec.min:g}) to max ({spec.max:g}); received "
                        f"{spec.start:g}; move it, or widen min/max")
    return (None if problems else spec), problems


# -------------------------------------------------------------------- decisions


def _steps(result: Result, target: str) -> float:
    s = result.get(target)
    return math.inf if s is None else float(s)


def best_rates(known: Mapping[int, Result], target: str) -> list[int]:
    """The tried rates with the fewest steps to ``target``, ascending (every tried rate when none reached it).

    >>> best_rates({0: {"loss": 30}, 2: {"loss": 20}, 4: {"loss": 20}, 6: {}}, "loss")
    [2, 4]
    """
    fewest = min(_steps(r, target) for r in known.values())
    return sorted(k for k, r in known.items() if _steps(r, target) == fewest)


def next_round(spec: Spec, k0: int, known: Mapping[int, Result], targets: tuple[str, ...]) -> tuple[int, ...]:
    """The rates (lattice indices) to try next, given every finished rate of the rounds so far; () when done.

    >>> spec = Spec(start=0.1, min=0.01, max=1.0)  # lattice indices -4 .. 4
    >>> next_round(spec, 0, {}, ("loss",))
    (-2, 0, 2)
    >>> next_round(spec, 0, {-2: {"loss": 90}, 0: {"loss": 50}, 2: {"loss": 40}}, ("loss",))  # step up
    (4,)
    >>> next_round(spec, 0, {-2: {"loss": 90}, 0: {"loss": 50}, 2: {"loss": 40}, 4: {"loss": 30}}, ("loss",))
    (3,)
    """
    lo_k, hi_k = spec.bounds()
    if not known:
        return tuple(sorted({max(lo_k, k0 - spec.stride), k0, min(hi_k, k0 + spec.stride)}))
    best = {t: best_rates(known, t) for t in targets}
    coarse = set()
    for t in targets:
        low, high = best[t][0], best[t][-1]
        if low > lo_k and not any(k < low for k in known):
            coarse.add(max(lo_k, low - spec.stride))
        if high < hi_k and not any(k > high for k in known):
            coarse.add(min(hi_k, high + spec.stride))
    if coarse:
        return tuple(sorted(coarse))
    reached = [t for t in targets if _steps(known[best[t][0]], t) < math.inf]  # refining an unreached target: no
    fine = {(t, n) for t in reached for b in best[t] for n in (b - 1, b + 1) if lo_k <= n <= hi_k and n not in known}
    inner = {n for t, n in fine if best[t][0] < n < best[t][-1]}  # between tied best rates: these first
    return tuple(sorted(inner or {n for _, n in fine}))


class CellState(NamedTuple):
    """A cell's search as its finished results say: its rounds, the last possibly unfinished (``pending``)."""

    rounds: tuple[tuple[int, ...], ...]
    pending: tuple[int, ...]  # the last round's rates not yet finished; () when done
    done: bool
    best: int  # the rate the chain's next batch size starts from (k0 until the cell is done)
    edges: dict[str, str]  # per target when done: "" (bracketed), "low", "high", "low,high" or "unreached"

    @property
    def tried(self) -> tuple[int, ...]:
        return tuple(sorted(k for r in self.rounds for k in r))


def edges(spec: Spec, known: Mapping[int, Result], targets: tuple[str, ...]) -> dict[str, str]:
    """Per target: where its best rates touch the lattice's bounds ("low", "high", both), "unreached", or ""."""
    lo_k, hi_k = spec.bounds()
    out = {}
    for t in targets:
        b = best_rates(known, t)
        if all(_steps(known[k], t) == math.inf for k in b):
            out[t] = "unreached"
        else:
            out[t] = ",".join(side for side, hit in (("low", b[0] == lo_k), ("high", b[-1] == hi_k)) if hit)
    return out


def chain_start(known: Mapping[int, Result], targets: tuple[str, ...], k0: int) -> int:
    """The rate a chain's next batch size starts from: the (lower) middle best rate of the first target that some
    rate reached; ``k0`` when none did."""
    for t in targets:
        b = best_rates(known, t)
        if _steps(known[b[0]], t) < math.inf:
            return b[(len(b) - 1) // 2]
    return k0


def replay(spec: Spec, k0: int, finished: Mapping[int, Result], targets: tuple[str, ...]) -> CellState:
    """The cell's rounds rebuilt from its finished results: each round is :func:`next_round` of the rounds
    before it, so a result outside them (another search's run of the same cell) changes nothing.

    >>> spec = Spec(start=0.1, min=0.01, max=1.0)
    >>> replay(spec, 0, {0: {"loss": 50}, 2: {"loss": 40}}, ("loss",)).pending  # -2 was killed: proposed again
    (-2,)
    """
    known: dict[int, Result] = {}
    rounds = []
    while True:
        todo = next_round(spec, k0, known, targets)
        if not todo:
            return CellState(tuple(rounds), (), True, chain_start(known, targets, k0), edges(spec, known, targets))
        rounds.append(todo)
        missing = tuple(k for k in todo if k not in finished)
        if missing:
            return CellState(tuple(rounds), missing, False, k0, {})
        known.update({k: finished[k] for k in todo})


def simulate(spec: Spec, k0: int, outcome: Callable[[int], Result], targets: tuple[str, ...]) -> CellState:
    """A whole search against ``outcome(k)`` (a synthetic cell, or a table of measured results)."""
    finished: dict[int, Result] = {}
    while not (state := replay(spec, k0, finished, targets)).done:
        finished.update({k: outcome(k) for k in state.pending})
    return state


# ------------------------------------------------------------------------ cells


@dataclasses.dataclass(frozen=True)
class Cell:
    """One search of a sweep: ``template`` is the configuration with the lattice's ``start`` as its learning
    rate (a placeholder: the cell is the configuration without it); ``chain`` names the cells that differ from
    it only in the batch size (and what ``by_batch_size`` sets with it), searched in ascending batch size."""

    template: Any  # a TrainConfig
    spec: Spec
    chain: str

    @property
    def targets(self) -> tuple[str, ...]:
        """The targets the configuration sets, in the order of :data:`mbstudy.metrics.TARGETS`."""
        return tuple(t for t, v in (("loss", self.template.target_loss), ("val", self.template.target_val))
                     if v is not None)

    @property
    def name(self) -> str:
        """The run name with ``-lr?`` for the rate (``sgd-mean-B32-lr?-s0``)."""
        return self.template.run_name().replace(f"-lr{self.template.learning_rate:.3g}", "-lr?")

    def config(self, k: int):
        """The configuration at the lattice's ``k``-th rate."""
        return dataclasses.replace(self.template, learning_rate=self.spec.rate(k))
