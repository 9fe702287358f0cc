"""The order a sweep's runs are handed out in: one compiled program's runs together, likely best rate first
(a fixed grid's, :class:`Dispatcher`; a learning-rate search's, as it proposes them, :class:`SearchDispatcher`)."""

from __future__ import annotations

import itertools
import math

from experiments.engine.pruning import PruneBoard, prune_group


def dispatch_order(configs) -> list:
    """Runs of one compiled program next to each other (a worker compiles each once), then by rate and seed.

    >>> from mbstudy.config import TrainConfig
    >>> cs = [TrainConfig(batch_size=b, learning_rate=lr) for lr in (0.2, 0.1) for b in (8, 4)]
    >>> [(c.batch_size, c.learning_rate) for c in dispatch_order(cs)]
    [(4, 0.1), (4, 0.2), (8, 0.1), (8, 0.2)]
    """
    return sorted(configs, key=lambda c: (c.program_key(), c.learning_rate, c.seed))


class Dispatcher:
    """Hands out a sweep's configurations, one compiled program's runs together (:func:`dispatch_order`).

    ``lanes``: how many programs are handed out at once, in turn (the local
    executor: one per worker), so that each program is compiled by one worker
    and a run of it that another worker takes loads it from the persistent
    compilation cache, instead of both workers compiling the same program at
    the same time. With a :class:`~experiments.engine.pruning.PruneBoard`, within a program the rate
    nearest its group's likely best goes first, so that the runs after it are
    given up early.
    """

    def __init__(self, todo, board: PruneBoard | None = None, lanes: int = 1):
        self.waiting = [list(b) for _, b in itertools.groupby(dispatch_order(todo), key=lambda c: c.program_key())]
        self.active: list[list] = []  # the programs being handed out, one per lane
        self.board = board
        self.lanes = max(1, lanes)
        self.turn = 0

    def __iter__(self):
        return self

    def __next__(self):
        for i, block in enumerate(self.active):  # a finished program's lane goes to the next program
            if not block and self.waiting:
                self.active[i] = self.waiting.pop(0)
        self.active = [b for b in self.active if b]
        while len(self.active) < self.lanes and self.waiting:
            self.active.append(self.waiting.pop(0))
        if not self.active:
            raise StopIteration
        lane = self.turn % len(self.active)
        self.turn += 1
        return self._take(self.active[lane])

    def _take(self, block: list):
        if self.board is None or all(prune_group(c) is None for c in block):
            return block.pop(0)
        rates: dict[str | None, list[float]] = {}
        for c in block:
            rates.setdefault(prune_group(c), []).append(c.learning_rate)

        def distance(i: int) -> tuple:
            c = block[i]
            if prune_group(c) is None or c.learning_rate <= 0:
                return (math.inf, i)
            guess = self.board.guess(c, rates[prune_group(c)])
            return (abs(math.log(c.learning_rate) - math.log(guess)), i)

        return block.pop(min(range(len(block)), key=distance))


class SearchDispatcher:
    """Hands out a learning-rate search's runs as its cells propose them (``chains.SearchWork.ready_by_program``).

    As :class:`Dispatcher` does, ``lanes`` compiled programs are handed out in
    turn, each keeping its lane while it has runs ready, so that a program is
    compiled by one worker; which runs exist is the search's decision alone
    (this only orders them). ``next()`` raises StopIteration when no run is
    ready now; more may be once a result comes back.
    """

    def __init__(self, work, lanes: int = 1):
        self.work = work
        self.lanes = max(1, lanes)
        self.active: list = []  # the program keys being handed out, one per lane
        self.turn = 0

    def __iter__(self):
        return self

    def __next__(self):
        by_program: dict = {}
        for key, cfg in self.work.ready_by_program():
            by_program.setdefault(key, []).append(cfg)
        if not by_program:
            raise StopIteration
        self.active = [k for k in self.active if k in by_program]
        for key in by_program:
            if len(self.active) >= self.lanes:
                break
            if key not in self.active:
                self.active.append(key)
        cfg = by_program[self.active[self.turn % len(self.active)]][0]
        self.turn += 1
        self.work.hand_out(cfg)
        return cfg
