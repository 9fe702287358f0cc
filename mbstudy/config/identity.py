"""What identifies a configuration: its hash (the ``cfg_hash`` a stored run carries), its run name and the key
of the compiled program it shares with others.

A field added after runs were stored (``since`` > 1 in its metadata) is left
out of :func:`as_dict`, and so of the hash, while it has its default: every
configuration stored before it existed keeps its hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from mbstudy.optimizers import OPTIMIZERS


def _fields(cfg) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cfg)}


def as_dict(cfg, *, without: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields as JSON-able values (tuples as lists), ``without`` some, and those added later (``since`` > 1)
    left out while they have their default."""
    fields = _fields(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, getattr(cfg, k)) for k in fields)
            if k not in without and not (fields[k].metadata["since"] > 1 and v == fields[k].default)}


def cfg_hash(cfg, *, without: tuple[str, ...] = ()) -> str:
    """A stable hash of the configuration (16 hex digits of the sha256 of :func:`as_dict` as sorted JSON)."""
    blob = json.dumps(as_dict(cfg, without=without), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _shown(value: Any) -> str:
    return str(value) if isinstance(value, bool) else f"{value:.6g}"


def run_name(cfg) -> str:
    """``[model-]optimizer-reduction-B<batch>[-acc<k>][-<tag><value>...]-lr<rate>[-after<schedule>]-s<seed>``: every
    hyper-parameter of the optimizer's registry entry (but the learning rate, always shown) whose value is not its
    default, by its tag (Adam's ``-b20.99``), so runs that differ in one get different names."""
    fields = _fields(cfg)
    opt = OPTIMIZERS[cfg.optimizer]
    values = cfg.hyper_values()
    shown = [("acc", cfg.accumulation)] if cfg.accumulation != fields["accumulation"].default else []
    shown += [(h.tag, values[h.name]) for h in opt.hyper if h.name != "learning_rate"
              and values[h.name] != (fields[h.name].default if h.field else h.default)]
    extra = "".join(f"-{tag}{_shown(value)}" for tag, value in shown)
    prefix = "" if cfg.model == "mlp" else f"{cfg.model}-"  # MLP runs keep the names they always had
    sched = f"-after{cfg.schedule.replace(' ', '')}" if cfg.schedule else ""
    return (f"{prefix}{cfg.optimizer}-{cfg.reduction}-B{cfg.batch_size}{extra}-lr{cfg.learning_rate:.3g}"
            f"{sched}-s{cfg.seed}")


def program_key(cfg) -> tuple[tuple[str, Any], ...]:
    """``(field, value)`` of every ``program`` field and of each static hyper-parameter the optimizer reads
    (its registry entry's; its own ones last, together): runs with the same key share one compiled program."""
    opt = OPTIMIZERS[cfg.optimizer]
    key = tuple((f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
                if f.metadata["role"] == "program" or f.name in opt.static)
    values = cfg.hyper_values()
    own = tuple((k, values[k]) for k, h in opt.own.items() if h.static)
    return key + ((("static_hyper", own),) if own else ())
