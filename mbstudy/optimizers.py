"""Optimizers, one registry entry each: an optax factory, the hyper-parameters it takes, and a label.

Each hyper-parameter (:class:`Hyper`) is one of two kinds:

- a :class:`~mbstudy.config.TrainConfig` field of the same name
  (``learning_rate``, ``momentum``, ``eps``, ``beta1``, ``beta2``; a plain
  string in ``hyper``, or ``Hyper(name, field=True)``): its value and its
  default are the field's, shared by every optimizer that reads it;
- the optimizer's own: the configuration's ``opt_args`` carries it as
  ``name=value`` pairs (``opt_args = "b2=0.95"``), checked against this entry
  (an unknown name, a bad type, the entry's own check), and its default is
  the entry's, by default the factory's own, read from its signature.

A hyper-parameter is ``traced`` (a float32 argument of the compiled loop: a
grid over it compiles once) or ``static`` (compiled in as a Python number:
one program per value). Adam's betas are static: optax computes ``1 - beta``
from them, which in float32 from a traced 0.999 differs from ``1 - 0.999``
computed in Python, so traced betas would change every Adam run's numbers.
Validation, run names (``-b20.95`` for a value that is not the default),
MLflow params and the compiled program's key all read the entry.
:data:`OPTIMIZERS` keeps the order of registration, the order in which
tables and figures list the optimizers.

Adding an optimizer is one :func:`register_optimizer` call:

>>> import optax
>>> from mbstudy.optimizers import OPTIMIZERS, Hyper, Optimizer
>>> [(o.name, o.label) for o in OPTIMIZERS.values()]
[('sgd', 'SGD'), ('momentum', 'momentum'), ('adam', 'Adam'), ('adamw', 'AdamW'), ('muon', 'Muon')]
>>> lion = Optimizer("lion", optax.lion, label="Lion", hyper=(
...     "learning_rate", Hyper("b1", static=True), Hyper("b2", static=True), Hyper("weight_decay")))
>>> lion.defaults(), lion.traced, lion.static
({'b1': 0.9, 'b2': 0.99, 'weight_decay': 0.001}, ('learning_rate', 'weight_decay'), ('b1', 'b2'))
>>> lion.parse_args("b2=0.95, weight_decay=0")
({'b2': 0.95, 'weight_decay': 0.0}, [])
>>> lion.parse_args("b3=0.95")[1]
["'lion' has no hyper-parameter 'b3' (did you mean 'b2'?); its own are b1, b2, weight_decay"]
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import optax
import optax.contrib

_FACTORY: Any = type("FromFactory", (), {"__repr__": lambda self: "<the factory's default>"})()


@dataclasses.dataclass(frozen=True)
class Hyper:
    """One hyper-parameter of an optimizer, named as its factory's argument.

    field: it is the ``TrainConfig`` field of that name (its value and default are the field's); else
      ``opt_args`` carries it and ``default`` applies where it does not.
    default: an own hyper-parameter's default; left out, the factory's own (from its signature).
    static: compiled into the program as a Python number instead of passed as a traced float32.
    kind: ``float``, ``int`` or ``bool`` (a bool is static); left out, the default's type if it is a bool or an
      int, else float.
    check: ``value -> message or None``, for ``opt_args`` values (the field's own check covers a field).
    tag: how a run name shows a value that is not the default (``-b20.95``); left out, the name.
    """

    name: str
    default: Any = _FACTORY
    static: bool = False
    field: bool = False
    kind: type | None = None
    check: Callable[[Any], str | None] | None = None
    tag: str = ""

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"Hyper: expected a name a factory can take as an argument; received {self.name!r}")
        if self.field and self.default is not _FACTORY:
            raise ValueError(f"Hyper({self.name!r}): a TrainConfig field's default is the field's; "
                             f"drop default={self.default!r}, or make it the optimizer's own (field=False)")
        if self.kind is None and not self.field and self.default is not _FACTORY:
            object.__setattr__(self, "kind", type(self.default) if isinstance(self.default, (bool, int)) else float)
        if self.kind is not None and self.kind not in (float, int, bool):
            raise ValueError(f"Hyper({self.name!r}): expected kind float, int or bool; received {self.kind!r}")
        if self.kind is bool and not self.static:
            raise ValueError(f"Hyper({self.name!r}): a bool cannot be traced; set static=True")
        object.__setattr__(self, "tag", self.tag or self.name)

    def parse(self, text: str) -> tuple[Any, str | None]:
        """An ``opt_args`` value as this hyper-parameter's kind: ``(value, None)`` or ``(None, message)``."""
        kind = self.kind or float
        try:
            if kind is bool:
                if text.lower() not in ("true", "false"):
                    raise ValueError
                value = text.lower() == "true"
            else:
                value = kind(text)
        except ValueError:
            what = {bool: "true or false", int: "an int", float: "a number"}[kind]
            return None, f"{self.name}: expected {what}; received {text!r}"
        if kind is float and not math.isfinite(value):
            return None, f"{self.name}: expected a finite number; received {text!r}"
        bad = self.check(value) if self.check else None
        return (None, f"{self.name}: {bad}") if bad else (value, None)


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """One registered optimizer: ``factory(**{h.name: value for h in hyper}) -> optax.GradientTransformation``.

    hyper: its hyper-parameters, in the order run names show them; a string is a traced ``TrainConfig`` field
      (``"learning_rate"``), a :class:`Hyper` says more.
    label: how tables and figures name it ("SGD"); left out, the name.
    scale_invariant: its update does not change when every gradient is multiplied by a constant (Adam's, up to
      its eps; SGD's scales with it). The analysis reads it where the algebra differs: a sum over the batch is the
      mean times B, which SGD needs a learning rate divided by B to undo and Adam does not.
    nqm: the optimizer of the noisy quadratic model (:mod:`mbstudy.nqm`) that stands in for it ("" for none).
    """

    name: str
    factory: Callable[..., optax.GradientTransformation]
    hyper: tuple[Hyper | str, ...]
    label: str = ""
    scale_invariant: bool = False
    nqm: str = ""

    def __post_init__(self) -> None:
        try:
            signature = inspect.signature(self.factory).parameters
        except (TypeError, ValueError):
            signature = {}
        out = []
        for h in self.hyper:
            h = Hyper(h, field=True) if isinstance(h, str) else h
            if not h.field and h.default is _FACTORY:
                default = getattr(signature.get(h.name), "default", inspect.Parameter.empty)
                if default is inspect.Parameter.empty:
                    raise ValueError(f"Optimizer {self.name!r}: its own hyper-parameter {h.name!r} needs a default "
                                     f"(the factory has none): Hyper({h.name!r}, default=...)")
                h = dataclasses.replace(h, default=default)
            if not h.field and (bad := h.parse(str(h.default))[1]):
                raise ValueError(f"Optimizer {self.name!r}: the default of {h.name!r} fails its own check: {bad}")
            out.append(h)
        names = [h.name for h in out]
        if len(set(names)) < len(names):
            raise ValueError(f"Optimizer {self.name!r}: a hyper-parameter is named twice in {names}")
        object.__setattr__(self, "hyper", tuple(out))
        object.__setattr__(self, "label", self.label or self.name)

    @property
    def traced(self) -> tuple[str, ...]:
        """The hyper-parameters passed to the compiled loop as traced values."""
        return tuple(h.name for h in self.hyper if not h.static)

    @property
    def static(self) -> tuple[str, ...]:
        """The hyper-parameters compiled into the program (one program per value)."""
        return tuple(h.name for h in self.hyper if h.static)

    @property
    def fields(self) -> tuple[str, ...]:
        """The ``TrainConfig`` fields it reads."""
        return tuple(h.name for h in self.hyper if h.field)

    @property
    def own(self) -> dict[str, Hyper]:
        """Its own hyper-parameters, the ones ``opt_args`` may carry."""
        return {h.name: h for h in self.hyper if not h.field}

    def defaults(self) -> dict[str, Any]:
        """The defaults of its own hyper-parameters."""
        return {k: h.default for k, h in self.own.items()}

    def parse_args(self, text: str) -> tuple[dict[str, Any], list[str]]:
        """``opt_args`` (``"b2=0.95,weight_decay=0.01"``) as ``({name: value}, problems)``."""
        values, problems = {}, []
        for item in (t.strip() for t in text.split(",")):
            if not item:
                continue
            name, sep, raw = (s.strip() for s in item.partition("="))
            if not sep or not name or not raw:
                problems.append(f"expected name=value pairs separated by commas, such as 'b2=0.95'; received {item!r}")
            elif name not in self.own:
                problems.append(self._unknown(name))
            elif name in values:
                problems.append(f"{name}: given twice; give it once")
            else:
                value, bad = self.own[name].parse(raw)
                problems += [bad] if bad else []
                values[name] = value
        return values, problems

    def _unknown(self, name: str) -> str:
        if name in self.fields:
            return f"{name!r} is the TrainConfig field {self.name!r} reads: set the field ({name} = ...) instead"
        if not self.own:
            return (f"{self.name!r} has no hyper-parameters of its own (it reads the TrainConfig fields "
                    f"{', '.join(self.fields)}); received {name!r}")
        close = difflib.get_close_matches(name, list(self.own), n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{self.name!r} has no hyper-parameter {name!r}{hint}; its own are {', '.join(self.own)}"

    def format_args(self, values: Mapping[str, Any]) -> str:
        """``opt_args`` written one way: its own hyper-parameters in order, those that differ from the default."""
        return ",".join(f"{k}={values[k]!r}" for k, h in self.own.items() if k in values and values[k] != h.default)

    def values(self, fields: Mapping[str, Any], opt_args: str = "") -> dict[str, Any]:
        """Every hyper-parameter's value: a field's from ``fields``, an own one's from ``opt_args`` or its default."""
        given = self.parse_args(opt_args)[0]
        return {h.name: fields[h.name] if h.field else given.get(h.name, h.default) for h in self.hyper}

    def make(self, values: Mapping[str, Any]) -> optax.GradientTransformation:
        """The transformation at these values (traced ones may be arrays; static ones are made Python numbers of
        their kind); an own hyper-parameter missing from ``values`` takes its default."""
        args = {}
        for h in self.hyper:
            if h.name in values:
                args[h.name] = (h.kind or float)(values[h.name]) if h.static else values[h.name]
            elif not h.field:
                args[h.name] = h.default
            else:
                raise ValueError(f"{self.name}: no value for {h.name!r}, the TrainConfig field it reads; pass "
                                 "TrainConfig.hyper() and TrainConfig.static_hyper()")
        return self.factory(**args)


def factory_default(factory: Callable[..., Any], name: str) -> Any:
    """The default of argument ``name`` in ``factory``'s signature (an optax factory's own default, for an entry whose
    factory is a lambda that renames its arguments).

    >>> factory_default(optax.adamw, "weight_decay")
    0.0001
    """
    default = inspect.signature(factory).parameters[name].default
    if default is inspect.Parameter.empty:
        raise ValueError(f"factory_default: {getattr(factory, '__name__', factory)}'s {name!r} has no default")
    return default


OPTIMIZERS: dict[str, Optimizer] = {}
REFERENCE = "sgd"  # the optimizer the study compares the others against (does momentum, or Adam, extend scaling?)


def register_optimizer(opt: Optimizer) -> Optimizer:
    """Add an optimizer to :data:`OPTIMIZERS` (by its name, after the ones there); returns it."""
    if not isinstance(opt, Optimizer):
        raise TypeError(f"register_optimizer: expected an mbstudy.optimizers.Optimizer; received {type(opt).__name__}")
    if opt.name in OPTIMIZERS:
        raise ValueError(f"Optimizer {opt.name!r}: that name is taken; choose another")
    OPTIMIZERS[opt.name] = opt
    return opt


# plain SGD: theta <- theta - lr g
register_optimizer(Optimizer("sgd", lambda learning_rate: optax.sgd(learning_rate), ("learning_rate",), label="SGD",
                             nqm="sgd"))
# heavy ball: v <- g + momentum v, theta <- theta - lr v
register_optimizer(Optimizer("momentum", lambda learning_rate, momentum: optax.sgd(learning_rate, momentum=momentum),
                             ("learning_rate", Hyper("momentum", field=True, tag="mom")), label="momentum", nqm="momentum"))
# Adam (Kingma & Ba 2015); the betas static (see the module docstring), by default optax's (0.9, 0.999)
register_optimizer(Optimizer("adam", lambda learning_rate, beta1, beta2, eps:
                             optax.adam(learning_rate, b1=beta1, b2=beta2, eps=eps),
                             ("learning_rate", Hyper("beta1", static=True, field=True, tag="b1"),
                              Hyper("beta2", static=True, field=True, tag="b2"), "eps"), label="Adam",
                             scale_invariant=True, nqm="preconditioned"))
# AdamW (Loshchilov & Hutter 2019): Adam's update plus weight_decay * theta, both times the learning rate (optax's
# decoupled decay); the betas and eps are Adam's fields (static betas, as Adam's), weight_decay its own, traced, by
# default optax's (1e-4). At weight_decay = 0 it is Adam, bit for bit.
register_optimizer(Optimizer("adamw", lambda learning_rate, beta1, beta2, eps,
                             weight_decay=factory_default(optax.adamw, "weight_decay"):
                             optax.adamw(learning_rate, b1=beta1, b2=beta2, eps=eps, weight_decay=weight_decay),
                             ("learning_rate", Hyper("beta1", static=True, field=True, tag="b1"),
                              Hyper("beta2", static=True, field=True, tag="b2"), "eps", Hyper("weight_decay")),
                             label="AdamW", scale_invariant=True))
# Muon (Jordan et al. 2024; optax.contrib.muon): each matrix's (2-D parameter's) Nesterov momentum (beta) rescaled
# to unit Frobenius norm and orthogonalised by ns_steps Newton-Schulz iterations, times sqrt(max(1, fan_out/fan_in));
# every other parameter (biases; the CNN's 3-D convolution kernels, so of the CNN only its last, dense layer is
# Muon's) is updated by AdamW inside it (adam_b1, adam_b2, no decay) at the same learning rate. eps is Adam's field
# (both parts read it; the same default, 1e-8); beta, ns_steps and the Adam betas static, weight_decay (the
# matrices' decoupled decay) traced; optax's defaults.
register_optimizer(Optimizer("muon", optax.contrib.muon, ("learning_rate", Hyper("beta", static=True),
                                                        Hyper("ns_steps", static=True), "eps", Hyper("weight_decay"),
                                                        Hyper("adam_b1", static=True), Hyper("adam_b2", static=True)),
                             label="Muon", scale_invariant=True))
