"""The order and names of what the study compares, read from the registries, never typed in the analysis.

Optimizers come in :data:`mbstudy.optimizers.OPTIMIZERS`' order (the order of registration); one registered
elsewhere (a user's, a test's) comes after them, by name. Workloads come in the order of the science grid's
``[[workloads]]`` and are labelled from it (:func:`workload_labels`); targets in
:data:`mbstudy.metrics.TARGETS`' order.
"""

from __future__ import annotations

from collections.abc import Iterable

from mbstudy.optimizers import OPTIMIZERS


def optimizers_in(seen: Iterable[str]) -> tuple[str, ...]:
    """The optimizers of ``seen`` in registry order, then any unregistered ones sorted by name."""
    seen = {str(o) for o in seen}
    known = [o for o in OPTIMIZERS if o in seen]
    return tuple(known) + tuple(sorted(seen - set(known)))


def reference_optimizer() -> str:
    """The optimizer the others are compared against (the first registered: plain SGD)."""
    return next(iter(OPTIMIZERS))


def ordered(names: Iterable[str], order: Iterable[str]) -> list[str]:
    """``names`` in ``order``, the others after them sorted."""
    names = set(names)
    order = list(order)
    return [n for n in order if n in names] + sorted(names - set(order))
