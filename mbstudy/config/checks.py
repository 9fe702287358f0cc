"""Every check of a configuration, each a function ``(value, fields) -> message or None``, and the one pass
that runs them (:func:`problems`).

A field's check is named after it (``checks.batch_size`` checks ``batch_size``)
and reads the other fields from ``fields``, the whole configuration as a dict.
:func:`problems` first reports unknown fields and wrong types (from the type
hints), then runs each field's check only when the fields it reads have the
right type, so one mistake gives one message. Every message names what was
expected and what was received. :func:`coerced` writes values one way before
they are checked and hashed (ints for floats, lists for tuples, one spelling of
a schedule), so that one configuration has one hash.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from mbstudy import schedule as _schedule
from mbstudy.data import DATASETS, n_validation
from mbstudy.losses import LOSSES, REDUCTIONS, loss_for_task
from mbstudy.layers import INITS
from mbstudy.model import ACTIVATIONS
from mbstudy.model_registry import MODELS
from mbstudy.optimizers import OPTIMIZERS
from mbstudy.step import ORDERS

INT32_MAX = 2**31 - 1  # the compiled loop counts steps in int32; JAX's PRNG takes 32-bit seeds

Check = Callable[[Any, Mapping[str, Any]], "str | None"]


class ConfigError(ValueError):
    """Every problem with a configuration, one per line; ``problems`` holds them as a list."""

    __module__ = "mbstudy.config"  # where users import it from (and what a traceback names)

    def __init__(self, problems: list[str], source: str = "TrainConfig"):
        self.problems = list(problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))


# ------------------------------------------------------------------ helpers


def did_you_mean(word: Any, choices) -> str:
    """`` (did you mean 'adam'?)`` for the choice closest to a misspelt ``word``, or ``''`` if none is close.

    >>> did_you_mean("adma", ["sgd", "momentum", "adam"]), did_you_mean("rmsprop", ["sgd", "momentum", "adam"])
    (" (did you mean 'adam'?)", '')
    """
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_field(where: str, name: str, fields) -> str:
    """``where: unknown field (did you mean 'x'?)``, or with the list of known fields when none is close."""
    hint = did_you_mean(name, fields)
    return f"{where}: unknown field{hint}" if hint else f"{where}: unknown field; known fields: {', '.join(fields)}"


def one_of(choices: Callable[[], list[str]]) -> Check:
    def check(v, d):
        return None if v in choices() else f"expected one of {choices()}; received {v!r}{did_you_mean(v, choices())}"
    return check


def at_least(low: int, what: str = "") -> Check:
    def check(v, d):
        if low <= v <= INT32_MAX:
            return None
        if v > INT32_MAX:
            return f"expected an int <= {INT32_MAX} (the compiled program holds it as int32); received {v!r}"
        return f"expected {what or f'an int >= {low}'}; received {v!r}"
    return check


def _options(source, d) -> dict[str, Any]:
    """The data set's options that are fields of the configuration (the text's ``context``), where well typed."""
    return {k: d[k] for k, _ in source.options if isinstance(d.get(k), int) and not isinstance(d.get(k), bool)
            and d[k] > 0}


def _size(source, d) -> int:
    """The size of the data set's training set a configuration generates (its ``n_train``, else the registered one,
    at the configuration's options)."""
    n = d.get("n_train")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 and source.resize else \
        source.n_train_at(**_options(source, d))


def _n_train(source, d) -> int:
    """The training-set size a configuration trains on: the data set's, less its validation split."""
    f = d.get("val_fraction")
    held = n_validation(_size(source, d), f) if isinstance(f, float) and 0 <= f <= 0.5 else 0
    return _size(source, d) - held


def _what_train(source, d) -> str:
    held = _size(source, d) - _n_train(source, d)
    return f"the {source.name} training set" + (f" less its {held} validation examples" if held else "")


# ------------------------------------------------------------------ one check per field


dataset = one_of(lambda: list(DATASETS))
data_seed = at_least(0, "a non-negative int")
model = one_of(lambda: list(MODELS))
activation = one_of(lambda: sorted(ACTIVATIONS))
init = one_of(lambda: list(INITS))
data_order = one_of(lambda: list(ORDERS))
channels = at_least(1, "a positive int")
context = at_least(1, "a positive int")
d_model = at_least(1, "a positive int")
n_blocks = at_least(1, "a positive int")


def n_heads(v, d):
    bad = at_least(1, "a positive int")(v, d)
    width = d.get("d_model")
    if bad or not (isinstance(width, int) and width > 0) or width % v == 0:
        return bad
    return f"expected a divisor of d_model ({width}): each head takes d_model / n_heads columns; received {v!r}"
reduction = one_of(lambda: list(REDUCTIONS))
seed = at_least(0, "a non-negative int")
steps = at_least(1, "a positive int")
eval_every = at_least(1, "a positive int")


def n_train(v, d):
    source = DATASETS.get(d.get("dataset"))
    if v == 0 or source is None or v == source.n_train:
        return None
    if source.resize is None:
        sizable = [k for k, s in DATASETS.items() if s.resize]
        return (f"{source.name!r} has a fixed training set of {source.n_train} examples; expected 0 (the data set's "
                f"own size); received {v!r} (data sets generated at any size: {sizable})")
    return source.check_size(v) if v > 0 else f"expected 0 (the data set's own size) or a positive size; received {v!r}"


def loss(v, d):
    known = ["auto", *LOSSES]
    if v not in known:
        return f"expected one of {known}; received {v!r}{did_you_mean(v, known)}"
    source = DATASETS.get(d.get("dataset"))
    if v != "auto" and source is not None and LOSSES[v].task != source.task:
        want = loss_for_task(source.task)
        return f"{d['dataset']!r} is a {source.task} data set and needs {want!r} (or 'auto'); received {v!r}"
    return None


def optimizer(v, d):
    bad = one_of(lambda: list(OPTIMIZERS))(v, d)
    if bad:
        return bad
    opt = OPTIMIZERS[v]
    missing = [k for k in opt.fields if k not in d]
    if missing:
        return (f"{v!r} reads {missing} as TrainConfig fields, which they are not: declare them its own "
                "(Hyper(name, default=...), carried by opt_args; see CONTRIBUTING.md, 'An optimizer')")
    clash = [k for k in opt.own if k in d]
    if clash:
        return (f"{v!r} declares {clash} its own, but they are TrainConfig fields: declare them Hyper(name, "
                "field=True) to read the field (its default is the field's), or name them otherwise (b2 for "
                "beta2) to keep defaults of their own")
    return None


def opt_args(v, d):
    name = d.get("optimizer")
    opt = OPTIMIZERS.get(name) if isinstance(name, str) else None
    if opt is None:
        return None  # the optimizer's own check reports it
    return "; ".join(opt.parse_args(v)[1]) or None


def learning_rate(v, d):
    return None if v > 0 else f"expected > 0; received {v!r}"


def momentum(v, d):
    return None if 0 <= v < 1 else f"expected 0 <= momentum < 1; received {v!r}"


def eps(v, d):
    return None if v > 0 else f"expected > 0; received {v!r}"


def beta(v, d):
    return None if 0 <= v < 1 else f"expected 0 <= value < 1 (a decay rate); received {v!r}"


def batch_size(v, d):
    source = DATASETS.get(d.get("dataset"))
    if source is None or 1 <= v <= _n_train(source, d):
        return None
    return f"expected 1 <= batch_size <= {_n_train(source, d)} ({_what_train(source, d)}); received {v!r}"


def accumulation(v, d):
    bad = at_least(1, "a positive int")(v, d)
    if bad:
        return bad
    b = d.get("batch_size")
    if isinstance(b, int) and not isinstance(b, bool) and b % v:
        return (f"expected a divisor of batch_size ({b}): each step's batch is cut into equal micro-batches; "
                f"received {v!r} (set batch_size to {v} x the micro-batch size)")
    return None


def schedule(v, d):
    try:
        entries = _schedule.parse(v)
    except ValueError as e:
        return str(e)
    if not entries:
        return None
    if d.get("accumulation", 1) != 1:
        return f"a schedule runs without accumulation; set accumulation = 1 (received {d.get('accumulation')!r})"
    source = DATASETS.get(d.get("dataset"))
    limit = _n_train(source, d) if source is not None else None
    big = [b for _, b, _ in entries if limit is not None and b > limit]
    if big:
        return f"batch size(s) {big} exceed {_what_train(source, d)} ({limit}); received {v!r}"
    b, every, lr, n = (d.get(k) for k in ("batch_size", "eval_every", "learning_rate", "steps"))
    if not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in (b, every, n)):
        return None  # those fields' own checks report them
    try:
        _schedule.phases(v, batch_size=b, learning_rate=lr, steps=n, eval_every=every)
    except ValueError as e:
        return f"{e}; received {v!r}"
    return None


def target_loss(v, d):
    return None if v is None or v > 0 else f"expected > 0 or none; received {v!r}"


def diverge_factor(v, d):
    return None if v > 1 else f"expected > 1; received {v!r}"


def init_perturbation(v, d):
    return None if v >= 0 else f"expected >= 0; received {v!r}"


def noise_batch(v, d):
    source = DATASETS.get(d.get("dataset"))
    if source is None or v == 0 or 2 <= v <= _n_train(source, d):
        return None
    return f"expected 0 (the whole training set) or 2..{_n_train(source, d)}; received {v!r}"


def eval_train(v, d):
    source = DATASETS.get(d.get("dataset"))
    if v == 0 or source is None or 1 <= v <= _n_train(source, d):
        return None
    return f"expected 0 (the data set's default) or 1..{_n_train(source, d)}; received {v!r}"


def eval_val(v, d):
    if v == 0:
        return None
    if v < 0:
        return f"expected 0 (the whole validation split) or a positive number of validation examples; received {v!r}"
    source = DATASETS.get(d.get("dataset"))
    f = d.get("val_fraction")
    if source is None or source.validation or isinstance(f, bool) or not isinstance(f, (int, float)):
        return None  # a data set with its own validation split: checked once it is loaded (mbstudy.train)
    if f == 0:
        return (f"expected 0: {source.name} has no validation split unless val_fraction is set (received {v!r}); "
                f"set val_fraction or leave eval_val at 0")
    held = n_validation(_size(source, d), f) if 0 < f <= 0.5 else v
    if v > held:
        return f"expected 0 (all of them) or 1..{held} (the validation split of val_fraction {f}); received {v!r}"
    return None


def stats_every(v, d):
    every = d.get("eval_every")
    if v == 0 or (isinstance(every, int) and every > 0 and v % every == 0):
        return None
    return f"expected 0 (every evaluation) or a positive multiple of eval_every ({every}); received {v!r}"


def val_fraction(v, d):
    if not 0 <= v <= 0.5:
        return f"expected 0 (no validation split) <= val_fraction <= 0.5; received {v!r}"
    source = DATASETS.get(d.get("dataset"))
    if v > 0 and source is not None and source.validation:
        return f"{source.name!r} has a validation split of its own; expected 0; received {v!r}"
    if v > 0 and source is not None and n_validation(_size(source, d), v) < 2:
        return f"holds out {n_validation(_size(source, d), v)} of {_size(source, d)} examples; expected at least 2"
    return None


def target_val(v, d):
    if v is None:
        return None
    if not v > 0:
        return f"expected > 0 or none; received {v!r}"
    source = DATASETS.get(d.get("dataset"))
    if not d.get("val_fraction") and not (source is not None and source.validation):
        return f"a validation target needs a validation split: set val_fraction (e.g. 0.2); received target_val={v!r}"
    return None


# ------------------------------------------------------------------ types, spelling, the one pass


@functools.cache
def base_type(hint: Any) -> type:
    """``float`` for ``float | None``, else the hint itself."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


@functools.cache
def is_sequence(hint: Any) -> bool:
    """Whether a field holds a tuple (``hidden``): a list in TOML, ``100,100`` as an MLflow param."""
    return typing.get_origin(hint) is tuple


def type_problem(name: str, value: Any, hint: Any) -> str | None:
    """None if ``value`` fits the field's type hint, else the message."""
    if is_sequence(hint):
        ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 < v <= INT32_MAX for v in value)
        return None if ok else f"{name}: expected a non-empty list of positive ints such as [100, 100]; received {value!r}"
    if value is None:
        return None if type(None) in typing.get_args(hint) else f"{name}: expected a value, not none"
    base = base_type(hint)
    if base is bool:
        return None if isinstance(value, bool) else f"{name}: expected true or false; received {value!r}"
    if base is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else f"{name}: expected an int; received {value!r}"
    if base is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{name}: expected a number; received {value!r}"
        return None if math.isfinite(value) else f"{name}: expected a finite number; received {value!r}"
    if base is str:
        return None if isinstance(value, str) else f"{name}: expected a string; received {value!r}"
    return None


def coerced(d: Mapping[str, Any], hints: Mapping[str, Any]) -> dict[str, Any]:
    """Ints given for float fields become floats, lists for sequence fields tuples; a schedule is written one way
    (``mbstudy.schedule.format_schedule``: no spaces, each rate as Python prints it), ``n_train`` equal to the
    data set's own size becomes 0 and ``opt_args`` is written in the optimizer's order without the values at
    their defaults, so that one configuration has one hash; nothing else changes."""
    out = {}
    for k, v in d.items():
        hint = hints.get(k)
        if hint is not None and base_type(hint) is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        elif hint is not None and is_sequence(hint) and isinstance(v, list):
            v = tuple(v)
        elif k == "schedule" and isinstance(v, str):
            try:
                v = _schedule.format_schedule(_schedule.parse(v))
            except ValueError:
                pass  # the field's check reports it
        elif k == "n_train" and d.get("dataset") in DATASETS and v == DATASETS[d["dataset"]].n_train:
            v = 0
        elif k == "opt_args" and isinstance(v, str) and isinstance(d.get("optimizer"), str):
            opt = OPTIMIZERS.get(d["optimizer"])
            values, bad = opt.parse_args(v) if opt else ({}, ["unknown"])
            v = v if bad else opt.format_args(values)  # its own order, defaults left out; a problem is reported
        out[k] = v
    return out


def problems(d: Mapping[str, Any], fields: Mapping[str, dataclasses.Field], hints: Mapping[str, Any]) -> list[str]:
    """Every problem with a configuration given as a dict of ``fields`` (missing ones take their defaults).

    Unknown fields, wrong types, then each field's own check (run only when the
    fields it reads have the right type, so one mistake gives one message).
    """
    found = [unknown_field(k, k, fields) for k in d if k not in fields]
    full = {**{k: f.default for k, f in fields.items()}, **{k: v for k, v in d.items() if k in fields}}
    typed = {k: p for k in fields if (p := type_problem(k, full[k], hints[k]))}
    found += typed.values()
    for name, f in fields.items():
        check = f.metadata["check"]
        # a check may read the data set: skip it when the data set's own value is wrong
        if check is None or name in typed or (name != "dataset" and "dataset" in typed):
            continue
        msg = check(full[name], full)
        if msg:
            found.append(f"{name}: {msg}")
    return found
