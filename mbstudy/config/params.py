"""A configuration as MLflow params and back: every field a string (``hidden`` as ``100,100``, None as ``None``).

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


def to_params(cfg) -> dict[str, str]:
    """Every field as an MLflow param: tuples as ``100,100``, None as ``None``."""
    return {k: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
            for k, v in dataclasses.asdict(cfg).items()}


def parse_param(name: str, text: str, hints: Mapping[str, Any]) -> Any:
    """One MLflow param back into its field's type (None for ``None``); unknown names stay strings."""
    hint = hints.get(name)
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
