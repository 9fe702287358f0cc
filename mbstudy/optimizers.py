"""Optimizers, one registry entry each: an optax factory and the fields it reads.

Every hyper-parameter an optimizer reads is a field of
:class:`mbstudy.config.TrainConfig` and is passed to the factory as a traced
value inside the compiled training loop, so a grid over learning rates (or
momenta, or eps) compiles once per shape.

Adding an optimizer is one :func:`register_optimizer` call and, if it reads
a hyper-parameter the configuration does not have yet, that field (with its
check) in ``mbstudy/config.py``:

>>> import optax
>>> from mbstudy.optimizers import OPTIMIZERS, Optimizer
>>> OPTIMIZERS["momentum"].hyper
('learning_rate', 'momentum')
>>> nesterov = Optimizer("nesterov", lambda learning_rate, momentum:
...                      optax.sgd(learning_rate, momentum=momentum, nesterov=True),
...                      hyper=("learning_rate", "momentum"))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import optax


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """One registered optimizer.

    factory: ``factory(**{field: value for field in hyper + static}) -> optax.GradientTransformation``;
      the ``hyper`` values may be traced arrays.
    hyper: the configuration fields it reads as traced values (arguments of the compiled loop: a grid over
      them compiles once).
    static: ``(field, default)`` of the fields it reads as Python numbers, compiled into the program (one
      program per value). Adam's betas are static: optax computes ``1 - beta`` from them, which in float32
      from a traced 0.999 differs from ``1 - 0.999`` computed in Python, so traced betas would change
      every Adam run's numbers. The default fills in a value a caller does not pass.
    """

    name: str
    factory: Callable[..., optax.GradientTransformation]
    hyper: tuple[str, ...]
    static: tuple[tuple[str, float], ...] = ()

    @property
    def fields(self) -> tuple[str, ...]:
        """Every configuration field it reads, traced then static."""
        return self.hyper + tuple(k for k, _ in self.static)

    def make(self, hyper: Mapping[str, jax.Array]) -> optax.GradientTransformation:
        """The transformation for these (possibly traced) hyper-parameter values; a static field missing from
        ``hyper`` takes its default."""
        return self.factory(**{k: hyper[k] for k in self.hyper},
                            **{k: float(hyper.get(k, default)) for k, default in self.static})


OPTIMIZERS: dict[str, Optimizer] = {}


def register_optimizer(opt: Optimizer) -> Optimizer:
    """Add an optimizer to :data:`OPTIMIZERS` (by its name); returns it."""
    if opt.name in OPTIMIZERS:
        raise ValueError(f"Optimizer {opt.name!r}: that name is taken; choose another")
    OPTIMIZERS[opt.name] = opt
    return opt


# plain SGD: theta <- theta - lr g
register_optimizer(Optimizer("sgd", lambda learning_rate: optax.sgd(learning_rate), ("learning_rate",)))
# heavy ball: v <- g + momentum v, theta <- theta - lr v
register_optimizer(Optimizer("momentum", lambda learning_rate, momentum: optax.sgd(learning_rate, momentum=momentum),
                             ("learning_rate", "momentum")))
# Adam (Kingma & Ba 2015); the betas static (see Optimizer.static), by default optax's (0.9, 0.999)
register_optimizer(Optimizer("adam", lambda learning_rate, eps, beta1, beta2:
                             optax.adam(learning_rate, b1=beta1, b2=beta2, eps=eps),
                             ("learning_rate", "eps"), static=(("beta1", 0.9), ("beta2", 0.999))))
