"""Sweep definitions: TOML files in ``experiments/grids/``, expanded and checked.

A definition file has four parts, all optional but ``[base]`` or ``[grid]`` (at least one is required):

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
everywhere (a list makes it a grid axis). Every configuration is checked by
:func:`mbstudy.config.problems`, the check a :class:`~mbstudy.config.TrainConfig`
runs on itself; unknown fields, wrong types, out-of-range values and
``by_batch_size`` keys that match no batch size are all collected and reported
together, before anything runs (``GridError``).
"""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from pathlib import Path
from typing import Any

from mbstudy import config
from mbstudy.config import FIELDS, SEQUENCE_FIELDS, TrainConfig

GRID_DIR = Path(__file__).resolve().parents[1] / "grids"
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


def _is_axis(field: str, v: Any) -> bool:
    """Whether a value lists alternatives: any list, except a sequence field's own list (``hidden = [100, 100]``)."""
    if field in SEQUENCE_FIELDS:
        return isinstance(v, list) and bool(v) and isinstance(v[0], list)
    return isinstance(v, list)


def _axis(field: str, v: Any) -> list[Any]:
    """The values of a grid axis (a single value is an axis of one)."""
    values = v if _is_axis(field, v) else [v]
    return [tuple(x) for x in values] if field in SEQUENCE_FIELDS else list(values)


def _tables(spec: dict[str, Any]) -> tuple[dict, dict, list[dict], dict[str, dict], list[str]]:
    """``[base]``, ``[grid]``, ``[[arms]]`` and ``[by_batch_size.*]`` of a parsed definition, and the problems of their TOML types."""
    problems = [f"{k}: unknown top-level key; expected {sorted(_TOP_KEYS)}" for k in spec if k not in _TOP_KEYS]
    if "base" not in spec and "grid" not in spec:
        problems.append("base, grid: a definition needs a [base] table, a [grid] table or both; received neither")

    def table(key: str) -> dict:
        value = spec.get(key, {})
        if isinstance(value, dict):
            return dict(value)
        problems.append(f"{key}: expected a table ([{key}] with key = value lines); received {type(value).__name__} {value!r:.60}")
        return {}

    base, grid = table("base"), table("grid")
    arms_raw = spec.get("arms", [{}])
    if isinstance(arms_raw, list) and all(isinstance(a, dict) for a in arms_raw):
        arms = [dict(a) for a in arms_raw] or [{}]
    else:
        problems.append(f"arms: expected an array of tables, one [[arms]] header per arm; received "
                        f"{type(arms_raw).__name__} {arms_raw!r:.60}")
        arms = [{}]
    by_batch_size = {}
    for k, v in table("by_batch_size").items():
        if isinstance(v, dict):
            by_batch_size[k] = dict(v)
        else:
            problems.append(f"by_batch_size.{k}: expected a table [by_batch_size.{k}] of \"B\" = value lines; received {v!r:.60}")
    return base, grid, arms, by_batch_size, problems


def expand(spec: dict[str, Any], source: str, overrides: dict[str, Any] | None = None) -> list[TrainConfig]:
    """The configurations of a parsed definition, checked; raises GridError with every problem."""
    base, grid, arms, by_batch_size, problems = _tables(spec)
    for name, table in (("base", base), ("grid", grid), *((f"arms[{i}]", a) for i, a in enumerate(arms))):
        problems += [f"{name}.{k}: unknown field; known fields: {', '.join(FIELDS)}" for k in table if k not in FIELDS]
    for k, table in by_batch_size.items():
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
        by_batch_size.pop(key, None)
        (grid if _is_axis(key, value) else base)[key] = value
    for name, table in (("grid", grid), *((f"arms[{i}]", a) for i, a in enumerate(arms))):
        for k, v in table.items():
            if isinstance(v, list) and not v and k in FIELDS:
                problems.append(f"{name}.{k}: an empty list gives no runs; give at least one value")
    if problems:
        raise GridError(source, problems)

    configs, seen, batch_sizes = [], set(), set()
    for arm in arms:
        axes = {**grid, **arm}
        keys = list(axes)
        for combo in itertools.product(*(_axis(k, axes[k]) for k in keys)):
            d = {**base, **dict(zip(keys, combo))}
            b = d.get("batch_size", FIELDS["batch_size"].default)
            batch_sizes.add(str(b))
            for field, table in by_batch_size.items():
                if str(b) in table:
                    d[field] = table[str(b)]
            bad = config.problems(d)
            if bad:
                problems += bad
                continue
            cfg = TrainConfig(**d)
            if cfg not in seen:
                seen.add(cfg)
                configs.append(cfg)
    for field, table in by_batch_size.items():
        if "batch_size" in (overrides or {}):  # `--set batch_size=64` picks some of the file's budgets: fine
            break
        unused = [b for b in table if b not in batch_sizes]
        if unused:
            problems.append(f"by_batch_size.{field}: key(s) {unused} match no batch size of the grid "
                            f"({sorted(batch_sizes, key=int)}); fix or remove them")
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
    """:meth:`mbstudy.config.TrainConfig.as_dict`."""
    return cfg.as_dict(without=without)


def config_hash(cfg: TrainConfig, *, without: tuple[str, ...] = ()) -> str:
    """:meth:`mbstudy.config.TrainConfig.hash`: 16 hex digits; ``without`` drops fields (the seed)."""
    return cfg.hash(without=without)


def run_name(cfg: TrainConfig) -> str:
    """:meth:`mbstudy.config.TrainConfig.run_name`."""
    return cfg.run_name()
