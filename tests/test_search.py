"""The learning-rate search's decisions (``experiments/engine/search.py``) on synthetic cells: it finds the best
rate and brackets it at the refined spacing, flags edge optima, and tries the same rates whatever order the runs
finish in, wherever a sweep was killed, and whichever runs pruning gave up."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from experiments.engine.search import (KEYS, Spec, best_rates, edges, make_spec, next_round, replay, simulate)

SPEC = Spec(start=0.1, min=1e-4, max=10.0)  # lattice indices -12 .. 8


def v_shaped(best: float, *, base: int = 100, slope: int = 10, reach: int | None = None, target: str = "loss"):
    """Steps to ``target`` growing by ``slope`` per lattice step away from ``best`` (a lattice index, or between
    two); ``reach``: rates further than that from the best never reach it."""
    def outcome(k: int) -> dict:
        d = abs(k - best)
        return {} if reach is not None and d > reach else {target: base + round(slope * d)}
    return outcome


def both(*outcomes):
    return lambda k: {key: v for o in outcomes for key, v in o(k).items()}


def bracketed_at_refine(spec: Spec, state, outcome, targets) -> bool:
    """Every best rate of every target has both lattice neighbours tried (or lies on a bound)."""
    lo, hi = spec.bounds()
    known = {k: outcome(k) for k in state.tried}
    return all((b - 1 in known or b == lo) and (b + 1 in known or b == hi)
               for t in targets for b in best_rates(known, t))


# --------------------------------------------------------------- the lattice


def test_the_lattice_spells_each_rate_once_to_three_digits():
    assert [SPEC.rate(k) for k in range(-4, 5)] == [0.01, 0.0178, 0.0316, 0.0562, 0.1, 0.178, 0.316, 0.562, 1.0]
    assert SPEC.bounds() == (-12, 8) and SPEC.rate(-12) == 1e-4 and SPEC.rate(8) == 10.0
    for k in range(-12, 9):
        assert SPEC.index(SPEC.rate(k)) == k and SPEC.index(float(str(SPEC.rate(k)))) == k, "a stored param reads back"
    assert SPEC.index(0.2) is None and SPEC.index(100.0) is None and SPEC.index(float("nan")) is None
    assert SPEC.nearest(0.15) == 1 and SPEC.nearest(1e9) == 8, "nearest: in log, within the bounds"
    fine = Spec(start=0.001, refine=0.01, step=0.01, min=1e-6, max=1e3)
    rates = [fine.rate(k) for k in range(*fine.bounds())]
    assert len(set(rates)) == len(rates) and rates == sorted(rates), "the finest refine still spells each rate once"
    # bounds between lattice points are rounded inward
    assert Spec(start=0.1, min=0.02, max=0.5).bounds() == (-2, 2)


@pytest.mark.parametrize("tables,expected", [
    ([("search.learning_rate", {"start": 0.1, "strat": 1})],
     "search.learning_rate.strat: unknown key (did you mean 'start'?); expected start, step, refine, min, max"),
    ([("search.learning_rate", {"start": "0.1"})], "search.learning_rate.start: expected a positive number"),
    ([("search.learning_rate", {"start": -1})], "received -1"),
    ([("search.learning_rate", {"start": True})], "received True"),
    ([("search.learning_rate", {"step": 0.5})], "search.learning_rate.start: required"),
    ([("search.learning_rate", {"start": 0.1, "refine": 0.001, "step": 0.5})], "refine: expected 0.01 to 1 decade"),
    ([("search.learning_rate", {"start": 0.1, "step": 0.6})], "step: expected a whole multiple of refine (0.25)"),
    ([("search.learning_rate", {"start": 0.1, "step": 0.1})], "received 0.1"),
    ([("search.learning_rate", {"start": 0.1, "min": 1.0, "max": 0.5})], "expected min < max"),
    ([("search.learning_rate", {"start": 1000})], "search.learning_rate.start: expected a rate from min (1e-06) to max (100)"),
    ([("search.learning_rate", {"start": 0.1}), ("arms[1].search.learning_rate", {"start": 1e3})],
     "arms[1].search.learning_rate.start: expected a rate from min"),
    ([("search.learning_rate", [0.1])], "search.learning_rate: expected a table"),
])
def test_bad_settings_name_the_key_the_value_and_the_fix(tables, expected):
    spec, problems = make_spec(tables)
    assert spec is None and any(expected in p for p in problems), problems


def test_later_tables_override_earlier_keys_and_the_rest_are_defaults():
    spec, problems = make_spec([("search.learning_rate", {"start": 0.1, "max": 1.0}),
                                ("workloads[0].search.learning_rate", {"min": 1e-3}),
                                ("arms[0].search.learning_rate", {"start": 0.01})])
    assert not problems
    assert spec == Spec(start=0.01, step=KEYS["step"][1], refine=KEYS["refine"][1], min=1e-3, max=1.0)


# --------------------------------------------------------------- the rounds


@pytest.mark.parametrize("best", [-11, -7.5, -5, -1, 0, 0.5, 1, 2, 3, 6, 7])
@pytest.mark.parametrize("k0", [-6, 0, 4])
def test_it_finds_the_best_rate_and_brackets_it_at_the_refined_spacing(best, k0):
    outcome = v_shaped(best)
    state = simulate(SPEC, k0, outcome, ("loss",))
    assert state.done and state.rounds[0] == (k0 - 2, k0, k0 + 2), "the start and a step either side, together"
    true_best = best_rates({k: outcome(k) for k in range(-12, 9)}, "loss")
    known = {k: outcome(k) for k in state.tried}
    assert best_rates(known, "loss") == true_best, "the best of the tried rates is the best of the lattice"
    assert bracketed_at_refine(SPEC, state, outcome, ("loss",))
    assert state.edges == {"loss": ""} and state.best in true_best
    assert len(state.tried) <= 4 + abs(best - k0) / 2 + 2, "a few rates beyond the walk to the best"


def test_a_best_rate_on_a_bound_is_an_edge_optimum():
    for best, side in ((-15, "low"), (-12, "low"), (8, "high"), (12, "high")):
        state = simulate(SPEC, 0, v_shaped(best), ("loss",))
        assert state.done and state.edges == {"loss": side}, best
    flat = simulate(Spec(start=0.1, min=0.01, max=1.0), 0, lambda k: {"loss": 50}, ("loss",))
    assert flat.edges == {"loss": "low,high"} and flat.tried == tuple(range(-4, 5)), "a plateau over the whole range"


def test_a_target_no_rate_reaches_is_searched_to_both_bounds_and_marked_unreached():
    spec = Spec(start=0.1, min=0.01, max=1.0)
    state = simulate(spec, 0, lambda k: {}, ("loss",))
    assert state.edges == {"loss": "unreached"} and state.best == 0, "the next batch size starts where this one did"
    assert state.tried == (-4, -2, 0, 2, 4)
    assert simulate(spec, 0, v_shaped(0, reach=1), ("loss",)).edges == {"loss": ""}, "reached near the best only"


def test_each_target_is_bracketed_and_the_chain_follows_the_first():
    loss, val = v_shaped(1, target="loss"), v_shaped(5, target="val")
    state = simulate(SPEC, 0, both(loss, val), ("loss", "val"))
    known = {k: both(loss, val)(k) for k in state.tried}
    assert best_rates(known, "loss") == [1] and best_rates(known, "val") == [5]
    assert bracketed_at_refine(SPEC, state, both(loss, val), ("loss", "val"))
    assert state.best == 1, "the next batch size starts from the training-loss target's best"
    assert simulate(SPEC, 0, both(lambda k: {}, val), ("loss", "val")).best == 5, "else the next target's"


def test_tied_best_rates_are_refined_between_them_first():
    """Steps counted at evaluations tie often: the rates between two tied best rates go first."""
    state = simulate(SPEC, 0, v_shaped(3), ("loss",))  # 2 and 4 tie, 3 is the best
    assert state.rounds == ((-2, 0, 2), (4,), (6,), (3,))
    assert next_round(SPEC, 0, {0: {"loss": 9}, 2: {"loss": 5}, 4: {"loss": 5}, 6: {"loss": 9}}, ("loss",)) == (3,)


def test_the_first_round_is_clipped_to_the_bounds():
    spec = Spec(start=0.1, min=0.01, max=1.0)
    assert next_round(spec, 4, {}, ("loss",)) == (2, 4) and next_round(spec, 3, {}, ("loss",)) == (1, 3, 4)
    assert next_round(spec, 0, {-2: {"loss": 5}, 0: {"loss": 9}, 2: {"loss": 9}}, ("loss",)) == (-4,)
    assert next_round(spec, -3, {-4: {"loss": 5}, -3: {"loss": 9}, -1: {"loss": 9}}, ("loss",)) == (), \
        "the best at the low bound, its neighbour tried: done"
    assert edges(spec, {-4: {"loss": 5}, -3: {"loss": 9}, -1: {"loss": 9}}, ("loss",)) == {"loss": "low"}


# ------------------------------------------------ the same rates, however it runs


def landscapes():
    rng = random.Random(0)
    for i in range(30):  # rugged: V-shaped plus noise, ties and unreachable rates; two targets
        a, b = rng.uniform(-10, 6), rng.uniform(-10, 6)
        noise = {k: (rng.randrange(3), rng.randrange(3)) for k in range(-12, 9)}

        def outcome(k, a=a, b=b, noise=noise, reach=rng.choice([3, 6, 30])):
            out = {}
            if abs(k - a) <= reach:
                out["loss"] = 5 * round(20 + 4 * abs(k - a) + noise[k][0])  # steps are multiples of 5: ties
            if abs(k - b) <= reach + 2:
                out["val"] = 5 * round(15 + 3 * abs(k - b) + noise[k][1])
            return out
        yield i, outcome


@pytest.mark.parametrize("i,outcome", list(landscapes()))
def test_the_rates_tried_do_not_depend_on_the_order_results_come_in_or_on_kills(i, outcome):
    targets = ("loss", "val")
    whole = simulate(SPEC, 0, outcome, targets)
    rng = random.Random(i)
    finished: dict[int, dict] = {}
    while True:  # results arrive one at a time in random order; a kill loses the round's unfinished runs
        state = replay(SPEC, 0, finished, targets)
        if state.done:
            break
        order = list(state.pending)
        rng.shuffle(order)
        for k in order[: rng.randint(1, len(order))]:  # some finish, then a kill: the rest are proposed again
            finished[k] = outcome(k)
            assert replay(SPEC, 0, finished, targets).rounds[: len(state.rounds) - 1] == state.rounds[:-1]
    assert state == whole
    extra = {**finished, 20: {"loss": 1}, -20: {"loss": 1}}  # another search's runs, off the lattice's bounds
    assert replay(SPEC, 0, extra, targets) == whole


def _prune(result: dict, board: dict, targets) -> dict:
    """What ``mbstudy.train`` leaves of a run given up against ``board`` (fewest steps to each target so far):
    evaluated every 5 steps, it stops at the first evaluation at or after the give-up step of every target it has
    not reached, keeping the targets it reached by then."""
    for step in range(0, 10_000, 5):
        pending = [t for t in targets if result.get(t, math.inf) > step]
        if not pending:
            return result
        if all(t in board for t in pending) and step >= max(board[t] for t in pending):
            return {t: s for t, s in result.items() if s <= step}
    return result


@pytest.mark.parametrize("i,outcome", list(landscapes()))
def test_pruning_changes_no_rate_the_search_tries(i, outcome):
    """Runs given up once another run of the cell has reached a target in fewer steps (in any order within a
    round, against every result finished before them) lead to the same rounds as unpruned runs."""
    targets = ("loss", "val")
    whole = simulate(SPEC, 0, outcome, targets)
    rng = random.Random(100 + i)
    finished: dict[int, dict] = {}
    pruned = 0
    while not (state := replay(SPEC, 0, finished, targets)).done:
        order = list(state.pending)
        rng.shuffle(order)
        for k in order:
            board = {t: min(r[t] for r in finished.values() if t in r) for t in targets
                     if any(t in r for r in finished.values())}
            finished[k] = _prune(outcome(k), board, targets)
            pruned += finished[k] != outcome(k)
    assert state.rounds == whole.rounds and state.best == whole.best and state.edges == whole.edges
    if i == 0:
        assert pruned, "the landscapes prune some runs"


def test_every_kill_point_of_a_search_resumes_to_the_same_rates():
    outcome = both(v_shaped(-3, target="loss"), v_shaped(2, target="val"))
    targets = ("loss", "val")
    whole = simulate(SPEC, 0, outcome, targets)
    runs = [k for r in whole.rounds for k in r]
    for n in range(len(runs) + 1):  # killed after any number of runs, in the order the rounds made them
        for dropped in itertools.combinations(runs[:n], min(1, n)):  # and with one of those lost in flight
            finished = {k: outcome(k) for k in runs[:n] if k not in dropped}
            state = replay(SPEC, 0, finished, targets)
            assert set(state.pending) <= set(runs) and set(finished) <= set(runs)
            assert simulate(SPEC, 0, outcome, targets) == whole
            while not state.done:
                finished.update({k: outcome(k) for k in state.pending})
                state = replay(SPEC, 0, finished, targets)
            assert state == whole
