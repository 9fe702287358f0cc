"""A configuration as MLflow params and back: every field a string (``hidden`` as ``100,100``, None as ``None``),
and each hyper-parameter of the optimizer's own (``opt_args``) with its value, default or not, as
``optimizer/<name>`` (for the analysis; reading a configuration back needs only the fields).

>>> from mbstudy.config import TrainConfig
>>> cfg = TrainConfig(hidden=(64, 32), target_loss=0.5)
>>> p = cfg.to_params()
>>> p["hidden"], p["target_loss"], p["stop_at_target"]
('64,32', '0.5', 'False')
>>> TrainConfig.from_params(p) == cfg
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mbstudy.config.checks import base_type, is_sequence
from mbstudy.optimizers import OPTIMIZERS

OWN = "optimizer/"  # the prefix of the params of an optimizer's own hyper-parameters


def to_params(cfg) -> dict[str, str]:
    """Every field as an MLflow param: tuples as ``100,100``, None as ``None``; the optimizer's own
    hyper-parameters as ``optimizer/<name>``."""
    out = {k: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
           for k, v in dataclasses.asdict(cfg).items()}
    values = cfg.hyper_values()
    return out | {f"{OWN}{k}": str(values[k]) for k in OPTIMIZERS[cfg.optimizer].own}


def parse_param(name: str, text: str, hints: Mapping[str, Any]) -> Any:
    """One MLflow param back into its field's type (None for ``None``); unknown names stay strings."""
    hint = hints.get(name)
    if hint is None and name.startswith(OWN):  # an optimizer's own hyper-parameter, of its kind where it is one
        kinds = {h.kind for o in OPTIMIZERS.values() for k, h in o.own.items() if k == name[len(OWN):]}
        hint = kinds.pop() if len(kinds) == 1 else None
    if hint is None:
        return text
    if text == "None":
        return None
    if is_sequence(hint):
        return tuple(int(x) for x in text.split(",") if x)
    base = base_type(hint)
    if base is bool:
        return text == "True"
    return base(text)


def fields_of(params: Mapping[str, str], hints: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration fields an MLflow run's params hold, typed (params that are no field are left out)."""
    return {k: parse_param(k, v, hints) for k, v in params.items() if k in hints}
