"""Batch-size schedules: phases of (steps, batch size, learning rate) that come before a run's own batch size.

``TrainConfig.schedule`` is a comma-separated list of ``STEPSxB@LR`` (for
example ``"64x16@0.1, 32x32@0.2"``: 64 steps of 16 examples at learning rate
0.1, then 32 steps of 32 at 0.2); after them the run trains ``steps`` more
steps at its ``batch_size`` and ``learning_rate``. The empty string (the
default) is no schedule: one phase, exactly the run it always was.

Two uses in the study (Q9):

- **branching from a checkpoint**: ``"704x32@0.316"`` with ``batch_size = B``
  is the reference run's first 704 steps (B = 32) followed by a branch at B;
  the first phase is the reference's own computation, bit for bit (same
  program, same data order, same values), so the branch starts from the
  reference's state at step 704 exactly as if that state had been saved and
  loaded (:func:`mbstudy.train.train`'s ``start``; both are tested);
- **batch-size warm-up**: phases of growing B (:func:`doubling`).

The data order of a phase at B continues a constant-B run's
(:func:`mbstudy.step.batch_indices`) from the examples seen so far: its first
step draws the batch a constant run at B would draw after
``examples_at(start) // B`` steps, so a warm-up sees its examples as the
constant-B runs it is compared with do (about once per epoch), and a phase at
the run's own batch size draws exactly what the constant run draws at that
step. (Rounded down to whole batches where the examples seen are not a
multiple of B.)

Evaluations keep a fixed number of examples between them:
``eval_every * batch_size`` (the run's own B). A phase at B_p evaluates every
``eval_every * batch_size / B_p`` steps, so B_p must divide that number of
examples (or exceed it: then every step), and a phase must last a whole
number of evaluation intervals; the phase boundaries are evaluations. With
no schedule this is ``eval_every`` steps, as before.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

_ENTRY = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*@\s*([0-9.]+(?:[eE][-+]?\d+)?)\s*$")
SYNTAX = "comma-separated STEPSxB@LR entries such as '64x16@0.1, 32x32@0.2' (empty: no schedule)"


class Phase(NamedTuple):
    """One phase of a run: ``steps`` steps of ``batch_size`` examples from step ``start``, evaluated every
    ``eval_every`` steps (and at its end)."""

    start: int
    steps: int
    batch_size: int
    learning_rate: float
    eval_every: int

    @property
    def end(self) -> int:
        return self.start + self.steps


def parse(text: str) -> list[tuple[int, int, float]]:
    """``(steps, batch size, learning rate)`` of each entry; ValueError naming the entry that is wrong.

    >>> parse("64x16@0.1, 32x32@2e-1")
    [(64, 16, 0.1), (32, 32, 0.2)]
    >>> parse("")
    []
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a string of {SYNTAX}; received {text!r}")
    if not text.strip():
        return []
    out = []
    for i, entry in enumerate(text.split(",")):
        m = _ENTRY.match(entry)
        if not m:
            raise ValueError(f"entry {i + 1} {entry.strip()!r} is not STEPSxB@LR; expected {SYNTAX}")
        steps, b, lr = int(m[1]), int(m[2]), float(m[3])
        if steps < 1 or b < 1 or not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"entry {i + 1} {entry.strip()!r}: expected steps >= 1, B >= 1 and a learning rate > 0")
        out.append((steps, b, lr))
    return out


def format_schedule(entries) -> str:
    """The schedule string of ``(steps, batch size, learning rate)`` entries (the inverse of :func:`parse`), each
    rate as Python prints a float (the shortest text that reads back to the same number).

    >>> format_schedule([(64, 16, 0.1), (32, 32, 2e-1), (8, 64, 1)])
    '64x16@0.1,32x32@0.2,8x64@1.0'
    """
    return ",".join(f"{s}x{b}@{float(lr)!r}" for s, b, lr in entries)


def phases(text: str, *, batch_size: int, learning_rate: float, steps: int, eval_every: int) -> list[Phase]:
    """The phases of a run: the schedule's, then ``steps`` at ``batch_size``; ValueError if one is not on the
    evaluation grid (see the module docstring)."""
    per_eval = eval_every * batch_size  # examples between evaluations
    out, start = [], 0
    entries = parse(text)
    for i, (n, b, lr) in enumerate([*entries, (steps, batch_size, learning_rate)]):
        if b < per_eval and per_eval % b:
            raise ValueError(f"entry {i + 1} ({n}x{b}@{lr:g}): B = {b} does not divide the {per_eval} examples between "
                             f"evaluations (eval_every x batch_size); use a power of two, or change eval_every")
        every = max(1, per_eval // b)
        if i < len(entries) and n % every:
            raise ValueError(f"entry {i + 1} ({n}x{b}@{lr:g}): {n} steps is not a whole number of evaluation "
                             f"intervals ({every} steps at B = {b}: eval_every x batch_size / B); make it a multiple "
                             f"of {every}")
        out.append(Phase(start, n, b, lr, every))
        start += n
    return out


def data_step(phase_list: list[Phase], step: int) -> int:
    """The step of the data order (:func:`mbstudy.step.batch_indices` at the batch size of the phase that holds
    ``step``) that step ``step`` draws: the phase's start in examples, in whole batches, plus its steps so far.

    >>> p = phases("64x16@0.1", batch_size=64, learning_rate=0.4, steps=10, eval_every=16)
    >>> data_step(p, 10), data_step(p, 64), data_step(p, 70)
    (10, 16, 22)
    """
    phase = next((p for p in phase_list if step < p.end), phase_list[-1])
    return examples_at(phase_list, phase.start) // phase.batch_size + (step - phase.start)


def examples_at(phase_list: list[Phase], step: int) -> int:
    """Examples seen in the first ``step`` steps.

    >>> examples_at(phases("64x16@0.1", batch_size=64, learning_rate=0.4, steps=10, eval_every=16), 70)
    1408
    """
    return sum(p.batch_size * min(max(step - p.start, 0), p.steps) for p in phase_list) + (
        phase_list[-1].batch_size * max(step - phase_list[-1].end, 0))


def doubling(b0: int, b_final: int, examples: int, lr0: float, *, lr_max: float | None = None) -> str:
    """A doubling warm-up: ``b0``, ``2 b0``, ... up to (not including) ``b_final``, each phase ``examples`` long,
    the learning rate scaled with B (the linear rule, ``lr0 * B / b0``) and capped at ``lr_max``; the run's own
    ``batch_size`` (``b_final``) and its learning rate follow.

    >>> doubling(16, 64, 1024, 0.1, lr_max=0.3)
    '64x16@0.1,32x32@0.2'
    """
    if not (b0 >= 1 and b_final > b0 and examples >= b0):
        raise ValueError(f"doubling: expected 1 <= b0 < b_final and examples >= b0; received {b0}, {b_final}, {examples}")
    entries, b = [], b0
    while b < b_final:
        if examples % b:
            raise ValueError(f"doubling: {examples} examples per phase is not a whole number of steps at B = {b}")
        lr = lr0 * b / b0
        entries.append((examples // b, b, min(lr, lr_max) if lr_max else lr))
        b *= 2
    return format_schedule(entries)


def placed(points, *, rule: str = "floor") -> tuple[list[tuple[int, int]], int]:
    """A warm-up placed where a measured local critical batch size says (Merrill et al.'s recipe; issue 25).

    ``points``: ``(examples seen, local B_crit)`` at the branch points, in order, the first at 0 examples. From
    each point to the next the batch size is a power of two taken from the least local B_crit at that point or
    any later one (the lower envelope, so B never grows past a later point's B_crit and never shrinks):
    the largest power of two at or below it (``rule="floor"``), or the nearest on a log scale (``"nearest"``; a tie,
    such as 181 = the geometric mean of 128 and 256 when half the seeds measured each, goes to the smaller).
    Returns the phases before the last point as ``(examples, B)``, equal neighbours merged, and the batch size
    from the last point on (the run's own ``batch_size``).

    >>> placed([(0, 70), (2048, 21), (4096, 27), (6144, 29), (12288, 70), (22528, 181)])
    ([(12288, 16), (10240, 64)], 128)
    >>> placed([(0, 70), (2048, 21), (4096, 27), (6144, 29), (12288, 70), (22528, (128 * 256) ** 0.5)], rule="nearest")
    ([(4096, 16), (8192, 32), (10240, 64)], 128)
    """
    if rule not in ("floor", "nearest"):
        raise ValueError(f"rule: expected 'floor' or 'nearest'; received {rule!r}")
    pts = [(int(e), float(b)) for e, b in points]
    if not pts or pts[0][0] != 0 or any(b[0] >= a[0] for a, b in zip(pts[1:], pts)) or any(
            not (math.isfinite(b) and b >= 1) for _, b in pts):
        raise ValueError("points: expected (examples, B_crit) pairs from 0 examples upward, each B_crit a finite "
                         f"number >= 1; received {points!r}")
    envelope = [min(b for _, b in pts[i:]) for i in range(len(pts))]
    to_b = (lambda v: 2 ** math.floor(math.log2(v) + 1e-9)) if rule == "floor" else (
        lambda v: 2 ** math.ceil(math.log2(v) - 0.5 - 1e-9))
    sizes = [int(to_b(v)) for v in envelope]
    phases: list[tuple[int, int]] = []
    for (e0, _), (e1, _), b in zip(pts, pts[1:], sizes):
        if phases and phases[-1][1] == b:
            phases[-1] = (phases[-1][0] + e1 - e0, b)
        else:
            phases.append((e1 - e0, b))
    final = sizes[-1]
    if phases and phases[-1][1] == final:  # the last phase already runs at the final batch size
        phases.pop()
    for n, b in phases:
        if n % b:
            raise ValueError(f"points: a phase of {n} examples is not a whole number of steps at B = {b}")
    return phases, final
