"""Sweep definitions: TOML files in ``experiments/grids/``, expanded and checked.

A definition file has four parts, all optional but ``[base]`` or ``[grid]``:

```toml
description = "one line shown in MLflow"
[base]                  # TrainConfig fields shared by every run
dataset = "mnist1d"
steps = 2000
[grid]                  # every combination of these lists
batch_size = [1, 16, 256]
seed = [0, 1, 2]
[[arms]]                # alternatives; each arm is a grid of its own, added to [grid]
optimizer = "sgd"
learning_rate = [0.01, 0.1, 1.0]
[by_batch_size.steps]   # a field that depends on the batch size ("B" = value)
"1" = 40000
```

The runs are ``base x grid x (arm_1 + arm_2 + ...)``, with ``by_batch_size``
applied last. ``--set field=value`` on the command line replaces ``field``
everywhere (a list makes it a grid axis). Unknown fields, wrong types and
out-of-range values are all collected and reported together, before anything
runs (``GridError``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import tomllib
import typing
from pathlib import Path
from typing import Any

from mbstudy.data import DATASETS, DATASET_SIZES
from mbstudy.losses import REDUCTIONS
from mbstudy.model import ACTIVATIONS
from mbstudy.train import OPTIMIZERS, TrainConfig

GRID_DIR = Path(__file__).resolve().parents[1] / "grids"
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)
_TOP_KEYS = {"description", "base", "grid", "arms", "by_batch_size"}


class GridError(ValueError):
    """Every problem with a sweep definition, one per line."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str
    description: str
    source: str
    configs: tuple[TrainConfig, ...]


def available() -> list[str]:
    return sorted(p.stem for p in GRID_DIR.glob("*.toml"))


def resolve(grid: str) -> Path:
    """A definition's name (``default``) or a path to a TOML file."""
    p = Path(grid)
    if p.suffix == ".toml" or "/" in grid:
        if not p.is_file():
            raise GridError(grid, [f"GRID: no such file {grid!r}; expected a TOML file or one of {available()}"])
        return p
    p = GRID_DIR / f"{grid}.toml"
    if not p.is_file():
        raise GridError(grid, [f"GRID: unknown sweep {grid!r}; available: {', '.join(available())}, or a path to a .toml file"])
    return p


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with a TOML value (``0.1``, ``[1, 2]``, ``"sgd"``); a bare word is a string."""
    if "=" not in text:
        raise GridError("--set", [f"--set: expected key=value; received {text!r}"])
    key, raw = (s.strip() for s in text.split("=", 1))
    if raw.lower() == "none":
        return key, None
    try:
        return key, tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return key, raw


# ------------------------------------------------------------------ checking


def _type_problem(field: str, value: Any) -> str | None:
    """None if ``value`` fits the field's type, else a message."""
    hint = _HINTS[field]
    if field == "hidden":
        ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        return None if ok else f"hidden: expected a non-empty list of positive ints such as [100, 100]; received {value!r}"
    if value is None:
        return None if field == "target_loss" else f"{field}: expected a value, not none"
    if hint is bool:
        return None if isinstance(value, bool) else f"{field}: expected true or false; received {value!r}"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else f"{field}: expected an int; received {value!r}"
    if hint in (float, float | None):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else f"{field}: expected a number; received {value!r}"
    if hint is str:
        return None if isinstance(value, str) else f"{field}: expected a string; received {value!r}"
    return None


def check_config(d: dict[str, Any]) -> list[str]:
    """Problems with one configuration given as a dict of TrainConfig fields."""
    problems = [f"{k}: unknown field; known fields: {', '.join(FIELDS)}" for k in d if k not in FIELDS]
    d = {**{f: FIELDS[f].default for f in FIELDS}, **{k: v for k, v in d.items() if k in FIELDS}}
    typed = {f: p for f in FIELDS if (p := _type_problem(f, d[f]))}
    problems += typed.values()

    def need(ok, msg: str, *fields: str) -> None:
        # a value is only checked when every field it reads has the right type
        if not any(f in typed for f in fields) and not ok():
            problems.append(msg)

    need(lambda: d["dataset"] in DATASETS, f"dataset: expected one of {list(DATASETS)}; received {d['dataset']!r}", "dataset")
    need(lambda: d["optimizer"] in OPTIMIZERS, f"optimizer: expected one of {list(OPTIMIZERS)}; received {d['optimizer']!r}", "optimizer")
    need(lambda: d["reduction"] in REDUCTIONS, f"reduction: expected one of {list(REDUCTIONS)}; received {d['reduction']!r}", "reduction")
    need(lambda: d["activation"] in ACTIVATIONS, f"activation: expected one of {sorted(ACTIVATIONS)}; received {d['activation']!r}", "activation")
    need(lambda: d["loss"] in ("auto", "mse", "cross_entropy"), f"loss: expected 'auto', 'mse' or 'cross_entropy'; received {d['loss']!r}", "loss")
    known = "dataset" not in typed and d["dataset"] in DATASETS
    if known and "loss" not in typed and d["loss"] in ("mse", "cross_entropy"):
        n, task = DATASET_SIZES[d["dataset"]]
        want = "cross_entropy" if task == "classification" else "mse"
        need(lambda: d["loss"] == want, f"loss: {d['dataset']!r} is a {task} data set and needs {want!r} (or 'auto'); received {d['loss']!r}")
    need(lambda: d["learning_rate"] > 0, f"learning_rate: expected > 0; received {d['learning_rate']!r}", "learning_rate")
    need(lambda: 0 <= d["momentum"] < 1, f"momentum: expected 0 <= momentum < 1; received {d['momentum']!r}", "momentum")
    need(lambda: d["eps"] > 0, f"eps: expected > 0; received {d['eps']!r}", "eps")
    need(lambda: d["steps"] > 0, f"steps: expected a positive int; received {d['steps']!r}", "steps")
    need(lambda: d["eval_every"] > 0, f"eval_every: expected a positive int; received {d['eval_every']!r}", "eval_every")
    need(lambda: d["seed"] >= 0, f"seed: expected a non-negative int; received {d['seed']!r}", "seed")
    need(lambda: d["data_seed"] >= 0, f"data_seed: expected a non-negative int; received {d['data_seed']!r}", "data_seed")
    need(lambda: d["target_loss"] is None or d["target_loss"] > 0, f"target_loss: expected > 0 or none; received {d['target_loss']!r}", "target_loss")
    need(lambda: d["diverge_factor"] > 1, f"diverge_factor: expected > 1; received {d['diverge_factor']!r}", "diverge_factor")
    need(lambda: d["init_perturbation"] >= 0, f"init_perturbation: expected >= 0; received {d['init_perturbation']!r}", "init_perturbation")
    if known:
        n, _ = DATASET_SIZES[d["dataset"]]
        need(lambda: 0 < d["batch_size"] <= n,
             f"batch_size: expected 1 <= batch_size <= {n} (the {d['dataset']} training set); received {d['batch_size']!r}", "batch_size")
        need(lambda: d["noise_batch"] == 0 or 2 <= d["noise_batch"] <= n,
             f"noise_batch: expected 0 (the whole training set) or 2..{n}; received {d['noise_batch']!r}", "noise_batch")
    return problems


def _is_axis(field: str, v: Any) -> bool:
    """Whether a value lists alternatives: any list, except ``hidden``'s own list of widths."""
    if field == "hidden":
        return isinstance(v, list) and bool(v) and isinstance(v[0], list)
    return isinstance(v, list)


def _axis(field: str, v: Any) -> list[Any]:
    """The values of a grid axis (a single value is an axis of one)."""
    values = v if _is_axis(field, v) else [v]
    return [tuple(x) for x in values] if field == "hidden" else list(values)


def expand(spec: dict[str, Any], source: str, overrides: dict[str, Any] | None = None) -> list[TrainConfig]:
    """The configurations of a parsed definition, checked; raises GridError with every problem."""
    problems = [f"{k}: unknown top-level key; expected {sorted(_TOP_KEYS)}" for k in spec if k not in _TOP_KEYS]
    base = dict(spec.get("base", {}))
    grid = dict(spec.get("grid", {}))
    arms = [dict(a) for a in spec.get("arms", [{}])] or [{}]
    by_b = {k: dict(v) for k, v in spec.get("by_batch_size", {}).items()}
    for name, table in (("base", base), ("grid", grid), *((f"arms[{i}]", a) for i, a in enumerate(arms))):
        problems += [f"{name}.{k}: unknown field; known fields: {', '.join(FIELDS)}" for k in table if k not in FIELDS]
    for k, table in by_b.items():
        if k not in FIELDS:
            problems.append(f"by_batch_size.{k}: unknown field; known fields: {', '.join(FIELDS)}")
        for b in table:
            if not b.isdigit():
                problems.append(f"by_batch_size.{k}: keys are batch sizes such as \"64\"; received {b!r}")
    for key, value in (overrides or {}).items():
        if key not in FIELDS:
            problems.append(f"--set {key}: unknown field; known fields: {', '.join(FIELDS)}")
            continue
        for table in (base, grid, *arms):
            table.pop(key, None)
        by_b.pop(key, None)
        (grid if _is_axis(key, value) else base)[key] = value
    for name, table in (("grid", grid), *((f"arms[{i}]", a) for i, a in enumerate(arms))):
        for k, v in table.items():
            if isinstance(v, list) and not v and k in FIELDS:
                problems.append(f"{name}.{k}: an empty list gives no runs; give at least one value")
    if problems:
        raise GridError(source, problems)

    configs, seen = [], set()
    for arm in arms:
        axes = {**grid, **arm}
        keys = list(axes)
        for combo in itertools.product(*(_axis(k, axes[k]) for k in keys)):
            d = {**base, **dict(zip(keys, combo))}
            b = d.get("batch_size", FIELDS["batch_size"].default)
            for field, table in by_b.items():
                if str(b) in table:
                    d[field] = table[str(b)]
            bad = check_config(d)
            if bad:
                problems += bad
                continue
            d = {k: (tuple(v) if k == "hidden" else v) for k, v in d.items()}
            d = {k: (float(v) if _HINTS[k] in (float, float | None) and v is not None else v) for k, v in d.items()}
            cfg = TrainConfig(**d)
            if cfg not in seen:
                seen.add(cfg)
                configs.append(cfg)
    if problems:
        raise GridError(source, list(dict.fromkeys(problems)))  # one line per distinct problem
    if not configs:
        raise GridError(source, ["the grid is empty: it expands to no runs; give every axis at least one value"])
    return configs


def load(grid: str, overrides: list[str] | None = None) -> Sweep:
    """Read, expand and check a definition by name or path; raises GridError."""
    path = resolve(grid)
    source = str(path)
    try:
        spec = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise GridError(source, [f"malformed TOML: {e}"]) from None
    parsed, problems = {}, []
    for text in overrides or []:
        try:
            k, v = parse_override(text)
            parsed[k] = v
        except GridError as e:
            problems += e.problems
    if problems:
        raise GridError(source, problems)
    configs = expand(spec, source, parsed)
    return Sweep(path.stem, str(spec.get("description", "")), source, tuple(configs))


# ------------------------------------------------------------------ identity


def config_dict(cfg: TrainConfig, *, without: tuple[str, ...] = ()) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["hidden"] = list(d["hidden"])
    return {k: v for k, v in d.items() if k not in without}


def config_hash(cfg: TrainConfig, *, without: tuple[str, ...] = ()) -> str:
    """A stable hash of the configuration (16 hex digits); ``without`` drops fields (the seed)."""
    blob = json.dumps(config_dict(cfg, without=without), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_name(cfg: TrainConfig) -> str:
    return f"{cfg.optimizer}-{cfg.reduction}-B{cfg.batch_size}-lr{cfg.learning_rate:.3g}-s{cfg.seed}"
