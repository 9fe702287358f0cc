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

A fifth part, ``[[workloads]]``, gives a second set of alternatives crossed
with the arms: each workload is a table of fields (data set, model, targets,
its batch sizes) and may carry its own ``[workloads.by_batch_size.FIELD]``
tables, which replace the top-level table of that field for its runs:

```toml
[[workloads]]
dataset = "digits"
batch_size = [1, 8, 64, 1150]
[workloads.by_batch_size.steps]
"1" = 8000
```

A top-level ``prune = false`` trains every run to its targets or its budget,
as ``--no-prune`` does: for an analysis that reads every learning rate's
steps to target (the robustness band of ``beta2.toml``), not only the fastest.

The runs are ``base x grid x (workload_1 + ...) x (arm_1 + arm_2 + ...)``,
with ``by_batch_size`` applied last. ``--set field=value`` on the command line replaces ``field``
everywhere (a list makes it a grid axis). Every configuration is made here, as
a :class:`~mbstudy.config.TrainConfig`, which checks itself once; unknown fields,
wrong types, out-of-range values (each configuration's
:class:`~mbstudy.config.ConfigError`) and ``by_batch_size`` keys that match no
batch size are all collected and reported together, before anything runs
(``GridError``).
"""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from pathlib import Path
from typing import Any

from mbstudy import config
from mbstudy.config import FIELDS, SEQUENCE_FIELDS, ConfigError, TrainConfig

GRID_DIR = Path(__file__).resolve().parents[1] / "grids"
_TOP_KEYS = {"description", "prune", "base", "grid", "arms", "by_batch_size", "workloads"}


class GridError(ValueError):
    """Every problem with a sweep definition, one per line (``problems``); ``source`` is the file (or ``options``).

    :meth:`lines` is what the command line prints, one ``error:`` line per problem, the file named once: on the
    first line, before the first problem (``mine.toml: base.lr: unknown field (did you mean 'learning_rate'?)``).
    """

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        head = f"{self.source}: " if self.source and Path(self.source).is_file() else ""
        if self.problems and self.problems[0].startswith(f"{self.source}:"):  # a problem that names its place itself
            head = ""
        return [head + self.problems[0], *self.problems[1:]] if self.problems else [head.rstrip(": ")]


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str
    description: str
    source: str
    configs: tuple[TrainConfig, ...]
    prune: bool = True  # the definition's ``prune = false`` turns pruning off (what --no-prune does)


def available() -> list[str]:
    return sorted(p.stem for p in GRID_DIR.glob("*.toml"))


def resolve(grid: str) -> Path:
    """A definition's name (``default``) or a path to a TOML file."""
    p = Path(grid)
    if p.suffix == ".toml" or "/" in grid:
        if not p.is_file():
            where = "" if p.is_absolute() else f" (that is {p.resolve()}: a relative path starts in {Path.cwd()})"
            raise GridError(grid, [f"GRID: no such file {grid!r}{where}; expected a TOML file or one of {available()}"])
        return p
    p = GRID_DIR / f"{grid}.toml"
    if not p.is_file():
        raise GridError(grid, [f"GRID: unknown sweep {grid!r}{config.checks.did_you_mean(grid, available())}; "
                               f"available: {', '.join(available())}, or a path to a .toml file"])
    return p


def toml_problem(path: Path, text: str, e: tomllib.TOMLDecodeError) -> str:
    """A TOML syntax error as ``FILE:LINE:COLUMN: ...``, with the line and a caret under the column."""
    import re

    message = str(e)
    at = re.search(r"\(at line (\d+), column (\d+)\)$", message)
    line, col = (getattr(e, "lineno", None), getattr(e, "colno", None)) if at is None else map(int, at.groups())
    what = getattr(e, "msg", None) or (message[:at.start()].rstrip() if at else message)
    if not line:
        return f"{path}: TOML syntax: {what}"
    lines = text.splitlines()
    shown = lines[line - 1] if 0 < line <= len(lines) else ""
    gutter = f"{line:>5} | "
    return (f"{path}:{line}:{col}: TOML syntax: {what}\n{gutter}{shown}\n"
            f"{' ' * (len(gutter) - 2)}| {' ' * max(0, col - 1)}^")


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


def _by_batch_size(raw: Any, where: str, problems: list[str]) -> dict[str, dict]:
    """A ``by_batch_size`` table: field -> {"B": value}; problems of its TOML types go to ``problems``."""
    out = {}
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected tables [{where}.FIELD] of \"B\" = value lines; received {raw!r:.60}")
        return out
    for k, v in raw.items():
        if isinstance(v, dict):
            out[k] = dict(v)
        else:
            problems.append(f"{where}.{k}: expected a table [{where}.{k}] of \"B\" = value lines; received {v!r:.60}")
    return out


def _alternatives(spec: dict[str, Any], key: str, problems: list[str]) -> list[dict]:
    """``[[arms]]`` or ``[[workloads]]``: a list of tables (one empty table when absent)."""
    raw = spec.get(key, [{}])
    if isinstance(raw, list) and all(isinstance(a, dict) for a in raw):
        return [dict(a) for a in raw] or [{}]
    one = {"arms": "arm", "workloads": "workload"}.get(key, "entry")
    problems.append(f"{key}: expected an array of tables, one [[{key}]] header per {one}; received "
                    f"{type(raw).__name__} {raw!r:.60}")
    return [{}]


def top_level_problems(spec: dict[str, Any]) -> list[str]:
    """The top-level keys that are unknown, and the scalar ones of the wrong type (``description``, ``prune``);
    the tables' types are :func:`_tables`' and :func:`_alternatives`'."""
    problems = [f"{k}: unknown top-level key{config.checks.did_you_mean(k, _TOP_KEYS)}; expected {sorted(_TOP_KEYS)}"
                for k in spec if k not in _TOP_KEYS]
    if not isinstance(spec.get("description", ""), str):
        problems.append(f"description: expected a string (one line shown in MLflow), such as description = \"...\"; "
                        f"received {type(spec['description']).__name__} {spec['description']!r:.60}")
    if not isinstance(spec.get("prune", True), bool):
        problems.append(f"prune: expected true or false (false: train every run to its targets or budget); "
                        f"received {spec['prune']!r:.60}")
    return problems


def _tables(spec: dict[str, Any]) -> tuple[dict, dict, list[dict], dict[str, dict], list[str]]:
    """``[base]``, ``[grid]``, ``[[arms]]`` and ``[by_batch_size.*]`` of a parsed definition, and the problems of their TOML types."""
    problems = top_level_problems(spec)
    if "base" not in spec and "grid" not in spec:
        problems.append("base, grid: a definition needs a [base] table, a [grid] table or both; received neither")

    def table(key: str) -> dict:
        value = spec.get(key, {})
        if isinstance(value, dict):
            return dict(value)
        problems.append(f"{key}: expected a table ([{key}] with key = value lines); received {type(value).__name__} {value!r:.60}")
        return {}

    base, grid = table("base"), table("grid")
    arms = _alternatives(spec, "arms", problems)
    by_batch_size = _by_batch_size(table("by_batch_size"), "by_batch_size", problems)
    return base, grid, arms, by_batch_size, problems


def expand(spec: dict[str, Any], source: str, overrides: dict[str, Any] | None = None) -> list[TrainConfig]:
    """The configurations of a parsed definition, checked; raises GridError with every problem."""
    base, grid, arms, by_batch_size, problems = _tables(spec)
    workloads = _alternatives(spec, "workloads", problems)
    own = [_by_batch_size(w.pop("by_batch_size", {}), f"workloads[{i}].by_batch_size", problems)
           for i, w in enumerate(workloads)]  # each workload's own tables
    for name, table in (("base", base), ("grid", grid), *((f"arms[{i}]", a) for i, a in enumerate(arms)),
                        *((f"workloads[{i}]", w) for i, w in enumerate(workloads))):
        problems += [config.checks.unknown_field(f"{name}.{k}", k, FIELDS) for k in table if k not in FIELDS]
    for where, tables in (("by_batch_size", by_batch_size),
                          *((f"workloads[{i}].by_batch_size", t) for i, t in enumerate(own))):
        for k, table in tables.items():
            if k not in FIELDS:
                problems.append(config.checks.unknown_field(f"{where}.{k}", k, FIELDS))
            for b in table:
                if not b.isdigit():
                    problems.append(f"{where}.{k}: keys are batch sizes such as \"64\"; received {b!r}")
    for key, value in (overrides or {}).items():
        if key not in FIELDS:
            problems.append(config.checks.unknown_field(f"--set {key}", key, FIELDS))
            continue
        for table in (base, grid, *arms, *workloads, *own):
            table.pop(key, None)
        by_batch_size.pop(key, None)
        (grid if _is_axis(key, value) else base)[key] = value
    for name, table in (("grid", grid), *((f"arms[{i}]", a) for i, a in enumerate(arms)),
                        *((f"workloads[{i}]", w) for i, w in enumerate(workloads))):
        for k, v in table.items():
            if isinstance(v, list) and not v and k in FIELDS:
                problems.append(f"{name}.{k}: an empty list gives no runs; give at least one value")
    if problems:
        raise GridError(source, problems)

    configs, seen, batch_sizes = [], set(), set()
    used: dict[tuple[str, str], set[str]] = {}  # (where, field) -> the batch sizes its table was consulted for
    for i, (workload, arm) in enumerate(itertools.product(workloads, arms)):
        w = i // len(arms)
        tables = {**{f: ("by_batch_size", t) for f, t in by_batch_size.items()},
                  **{f: (f"workloads[{w}].by_batch_size", t) for f, t in own[w].items()}}
        axes = {**grid, **workload, **arm}
        keys = list(axes)
        for combo in itertools.product(*(_axis(k, axes[k]) for k in keys)):
            d = {**base, **dict(zip(keys, combo))}
            b = d.get("batch_size", FIELDS["batch_size"].default)
            batch_sizes.add(str(b))
            for field, (where, table) in tables.items():
                used.setdefault((where, field), set()).add(str(b))
                if str(b) in table:
                    d[field] = table[str(b)]
            try:
                cfg = TrainConfig(**d)  # the one check of a configuration, where it is made
            except ConfigError as e:
                problems += e.problems
                continue
            if cfg not in seen:
                seen.add(cfg)
                configs.append(cfg)
    for where, tables in (("by_batch_size", by_batch_size),
                          *((f"workloads[{i}].by_batch_size", t) for i, t in enumerate(own))):
        if "batch_size" in (overrides or {}):  # `--set batch_size=64` picks some of the file's budgets: fine
            break
        for field, table in tables.items():
            seen_b = used.get((where, field), set())
            unused = [b for b in table if b not in seen_b]
            if unused:
                problems.append(f"{where}.{field}: key(s) {unused} match no batch size of the grid "
                                f"({sorted(seen_b or batch_sizes, key=int)}); fix or remove them")
    if problems:
        raise GridError(source, list(dict.fromkeys(problems)))  # one line per distinct problem
    if not configs:
        raise GridError(source, ["the grid is empty: it expands to no runs; give every axis at least one value"])
    return configs


def select(configs, only: dict[str, Any], source: str) -> list[TrainConfig]:
    """The configurations whose field ``k`` is ``only[k]`` (or one of it, a list) for every ``k``."""
    problems = [config.checks.unknown_field(f"--only {k}", k, FIELDS) for k in only if k not in FIELDS]
    if problems:
        raise GridError(source, problems)
    wanted = {k: [tuple(x) if isinstance(x, list) else x for x in (v if _is_axis(k, v) else [v])]
              for k, v in only.items()}

    def spelled(c: TrainConfig, k: str, v: Any) -> Any:  # a value as the configuration stores it (config.coerced)
        return config.coerced({"dataset": c.dataset, "optimizer": c.optimizer, k: v})[k]

    kept = [c for c in configs if all(getattr(c, k) in [spelled(c, k, v) for v in vals] for k, vals in wanted.items())]
    if not kept:
        raise GridError(source, [f"--only {', '.join(f'{k}={v!r}' for k, v in only.items())}: no configuration of the "
                                 f"grid matches; its values are e.g. " + ", ".join(
                                     f"{k} in {sorted({str(getattr(c, k)) for c in configs})}" for k in only)])
    return kept


def load(grid: str, overrides: list[str] | None = None, only: list[str] | None = None) -> Sweep:
    """Read, expand and check a definition by name or path, then keep the configurations ``only`` selects
    (``field=value`` texts, as ``--only`` gives them); raises GridError."""
    path = resolve(grid)
    source = str(path)
    text = path.read_text()
    try:
        spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise GridError(source, [toml_problem(path, text, e)]) from None
    parsed, selected, problems = {}, {}, []
    for texts, into in ((overrides, parsed), (only, selected)):
        for text in texts or []:
            try:
                k, v = parse_override(text)
                into[k] = v
            except GridError as e:
                problems += e.problems
    if problems:
        raise GridError(source, problems)
    configs = expand(spec, source, parsed)  # every problem of the file, its top-level keys' included
    if selected:
        configs = select(configs, selected, source)
    return Sweep(path.stem, spec.get("description", ""), source, tuple(configs), spec.get("prune", True))
