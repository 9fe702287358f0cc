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

A workload or an arm may carry a ``label = "..."``: how the analysis names the
runs it made (a sweep's :attr:`Sweep.labels` maps each configuration's hash to
its workload's and its arm's labels; the first entry that makes a configuration
names it). A top-level ``[meta]`` table holds facts the analysis compares the runs
with (a paper's numbers), read as :attr:`Sweep.meta` and never part of a
configuration.

A top-level ``prune = false`` trains every run to its targets or its budget,
as ``--no-prune`` does: for an analysis that reads every learning rate's
steps to target (the robustness band of ``beta2.toml``), not only the fastest.

A sixth, ``[search.learning_rate]``, searches the learning rate instead of
listing it (the decisions: ``experiments/engine/search.py``; the sweep's
state of them: ``chains.py``):

```toml
[search.learning_rate]
start = 0.1      # required: where each chain starts (rounded to 3 significant digits)
step = 0.5       # decades between rates while bracketing; a whole multiple of refine (default 0.5)
refine = 0.25    # decades between rates around the best once it is bracketed, 0.01 to 1 (default 0.25)
min = 1e-6       # the range searched (defaults 1e-6 and 100), rounded inward onto the lattice
max = 100.0
[[arms]]
optimizer = "adam"
[arms.search.learning_rate]  # this arm's own keys (a workload's: [workloads.search.learning_rate])
start = 0.001
```

The grid then expands to **cells** (``Sweep.cells``; ``Sweep.configs`` is
empty): a configuration without its learning rate, the prune group (seed
included). Each cell's rates lie on the lattice ``start * 10**(k * refine)``;
the cells that differ only in the batch size (and what ``by_batch_size`` sets
with it) form a chain, searched in ascending batch size, each cell starting
from the previous one's best rate. A cell tries its start and one ``step``
either side, steps outward until every target's best rate has a worse tried
rate on both sides, then refines at ``refine`` spacing. A best rate at ``min``
or ``max`` is an edge optimum, tagged ``search/edge`` on the cell's runs and
counted in the sweep's summary. A workload's keys override the top-level
ones and an arm's override both (as fields do); a search needs runs that stop
at a target (``stop_at_target`` and ``target_loss`` or ``target_val``), and no
``learning_rate`` elsewhere in the file. ``--set learning_rate=...`` turns the
search off (every cell at that rate, or those rates); ``--only`` selects cells
(a chain is then the cells selected: ``--only batch_size=64`` starts at ``start``).

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

from experiments.engine import search
from mbstudy import config
from mbstudy.config import FIELDS, SEQUENCE_FIELDS, ConfigError, TrainConfig

GRID_DIR = Path(__file__).resolve().parents[1] / "grids"
_TOP_KEYS = {"description", "prune", "base", "grid", "arms", "by_batch_size", "workloads", "search", "meta"}
LABEL = "label"  # the key of a workload's or an arm's label (not a configuration field)


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
    configs: tuple[TrainConfig, ...]  # the runs of a grid that lists its learning rates; () where they are searched
    prune: bool = True  # the definition's ``prune = false`` turns pruning off (what --no-prune does)
    cells: tuple[search.Cell, ...] = ()  # the searches of a grid with [search.learning_rate] (experiments/engine/search.py)
    labels: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # label_key -> (workload, arm) labels
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)  # the definition's [meta] table

    def label_of(self, cfg: TrainConfig) -> tuple[str, str]:
        """The (workload, arm) labels of a configuration of this sweep ("" where none)."""
        found = self.labels.get(cfg.hash()) or self.labels.get(cfg.hash(without=("learning_rate",)))
        return found or ("", "")


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


def _labels(entries: list[dict], key: str, problems: list[str]) -> list[str]:
    """Each entry's ``label`` (popped from it; "" when absent)."""
    out = []
    for i, e in enumerate(entries):
        label = e.pop(LABEL, "")
        if not isinstance(label, str):
            problems.append(f"{key}[{i}].{LABEL}: expected a string naming the {key[:-1]}; received {label!r:.60}")
            label = ""
        out.append(label)
    return out


def expand(spec: dict[str, Any], source: str, overrides: dict[str, Any] | None = None) -> list[TrainConfig]:
    """The configurations of a parsed definition, checked (a search grid's: its cells' templates); raises GridError
    with every problem."""
    configs, cells, _ = expand_cells(spec, source, overrides)
    return configs or [c.template for c in cells]


def _searches(spec: dict[str, Any], workloads: list[dict], arms: list[dict], problems: list[str]) -> list | None:
    """The ``[search.learning_rate]`` tables (top level, then each workload's and arm's own, popped from them) as
    ``[top, [per workload], [per arm]]`` of ``(where, table)`` lists; None when the grid has none."""
    def one(raw: Any, where: str) -> list[tuple[str, Any]]:
        if not isinstance(raw, dict) or set(raw) - {"learning_rate"}:
            problems.append(f"{where}: expected [{where}.learning_rate] (only the learning rate can be searched); "
                            f"received {raw!r:.60}")
            return []
        return [(f"{where}.learning_rate", raw["learning_rate"])] if "learning_rate" in raw else []

    top = one(spec["search"], "search") if "search" in spec else []
    own = [one(w.pop("search"), f"workloads[{i}].search") if "search" in w else [] for i, w in enumerate(workloads)]
    per_arm = [one(a.pop("search"), f"arms[{i}].search") if "search" in a else [] for i, a in enumerate(arms)]
    found = "search" in spec or any(own) or any(per_arm)
    return [top, own, per_arm] if found else None


def expand_cells(spec: dict[str, Any], source: str, overrides: dict[str, Any] | None = None,
                 ) -> tuple[list[TrainConfig], list[search.Cell], dict[str, tuple[str, str]]]:
    """The configurations of a parsed definition, or, where its learning rate is searched, its cells; checked,
    raising GridError with every problem. ``--set learning_rate=...`` turns a search off (a fixed rate). Also the
    (workload, arm) labels by :func:`label_key`."""
    base, grid, arms, by_batch_size, problems = _tables(spec)
    workloads = _alternatives(spec, "workloads", problems)
    arm_labels, workload_labels = _labels(arms, "arms", problems), _labels(workloads, "workloads", problems)
    own = [_by_batch_size(w.pop("by_batch_size", {}), f"workloads[{i}].by_batch_size", problems)
           for i, w in enumerate(workloads)]  # each workload's own tables
    searches = _searches(spec, workloads, arms, problems)
    if searches is not None and "learning_rate" in (overrides or {}):
        searches = None  # a fixed rate from the command line: the search is off
    for name, table in (("base", base), ("grid", grid), *((f"arms[{i}]", a) for i, a in enumerate(arms)),
                        *((f"workloads[{i}]", w) for i, w in enumerate(workloads))):
        problems += [config.checks.unknown_field(f"{name}.{k}", k, FIELDS) for k in table if k not in FIELDS]
        if name == "base":  # [base] holds one value per field; alternatives are an axis of [grid] or a workload's
            problems += [f"base.{k}: a list of alternatives ({v!r:.60}) in [base], which holds one value per field; "
                         f"move it to [grid] (or to a [[workloads]] entry)" for k, v in table.items()
                         if k in FIELDS and _is_axis(k, v)]
        if searches is not None and "learning_rate" in table:
            problems.append(f"{name}.learning_rate: the learning rate is searched ([search.learning_rate]); remove "
                            "it here, or remove the search to list the rates")
    for where, tables in (("by_batch_size", by_batch_size),
                          *((f"workloads[{i}].by_batch_size", t) for i, t in enumerate(own))):
        for k, table in tables.items():
            if k not in FIELDS:
                problems.append(config.checks.unknown_field(f"{where}.{k}", k, FIELDS))
            if searches is not None and k == "learning_rate":
                problems.append(f"{where}.learning_rate: the learning rate is searched ([search.learning_rate]); "
                                "remove this table, or remove the search")
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
    specs: dict[tuple[int, int], search.Spec | None] = {}
    if searches is not None:
        top, per_workload, per_arm = searches
        for w, a in itertools.product(range(len(workloads)), range(len(arms))):
            specs[w, a], found = search.make_spec([*top, *per_workload[w], *per_arm[a]])
            problems += found
    if problems:
        raise GridError(source, list(dict.fromkeys(problems)))

    configs, seen, batch_sizes, labels = [], set(), set(), {}
    cells: dict[TrainConfig, search.Cell] = {}
    used: dict[tuple[str, str], set[str]] = {}  # (where, field) -> the batch sizes its table was consulted for
    for i, (workload, arm) in enumerate(itertools.product(workloads, arms)):
        w = i // len(arms)
        label = (workload_labels[w], arm_labels[i % len(arms)])
        tables = {**{f: ("by_batch_size", t) for f, t in by_batch_size.items()},
                  **{f: (f"workloads[{w}].by_batch_size", t) for f, t in own[w].items()}}
        axes = {**grid, **workload, **arm}
        keys = list(axes)
        lattice = specs.get((w, i % len(arms)))
        for combo in itertools.product(*(_axis(k, axes[k]) for k in keys)):
            d = {**base, **dict(zip(keys, combo))}
            if lattice is not None:
                d["learning_rate"] = lattice.rate(0)  # the cell's placeholder: its lattice's start
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
            if lattice is not None:
                problems += _add_cell(cells, cfg, lattice, sorted(tables), f"workloads[{w}] x arms[{i % len(arms)}]")
            elif cfg not in seen:
                seen.add(cfg)
                configs.append(cfg)
            if any(label):
                labels.setdefault(label_key(cfg, searched=lattice is not None), label)
    for where, tables in (("by_batch_size", by_batch_size),
                          *((f"workloads[{i}].by_batch_size", t) for i, t in enumerate(own))):
        if "batch_size" in (overrides or {}):  # `--set batch_size=64` picks some of the file's budgets: fine
            break
        for field, table in tables.items():
            seen_b = used.get((where, field), set())
            unused = [b for b in table if b not in seen_b]
            if unused:
                problems.append(f"{where}.{field}: key(s) {unused} match no batch size of the grid "
                                f"({sorted((b for b in (seen_b or batch_sizes) if str(b).isdigit()), key=int)}); "
                                "fix or remove them")
    if problems:
        raise GridError(source, list(dict.fromkeys(problems)))  # one line per distinct problem
    if not configs and not cells:
        raise GridError(source, ["the grid is empty: it expands to no runs; give every axis at least one value"])
    return configs, list(cells.values()), labels


def label_key(cfg: TrainConfig, searched: bool | None = None) -> str:
    """The key of a configuration's labels in :attr:`Sweep.labels`: its hash, or for a searched cell (whose rate is
    the search's) its hash without the learning rate."""
    return cfg.hash(without=("learning_rate",)) if searched else cfg.hash()


def _add_cell(cells: dict, cfg: TrainConfig, spec: search.Spec, by_batch: list[str], where: str) -> list[str]:
    """Add ``cfg``'s cell (once) to ``cells``; its problems: a run that does not stop at a target, or a second
    search of the same cell that differs."""
    if not (cfg.stop_at_target and (cfg.target_loss is not None or cfg.target_val is not None)):
        return [f"{where}: a searched learning rate needs runs that stop at a target (the search compares steps to "
                f"it); set stop_at_target = true and target_loss or target_val; received stop_at_target = "
                f"{cfg.stop_at_target}, target_loss = {cfg.target_loss}, target_val = {cfg.target_val}"]
    if cfg in cells:
        return [] if cells[cfg].spec == spec else [
            f"{where}: {cfg.run_name()} is searched twice with different settings ({cells[cfg].spec} and {spec}); "
            "give the two alternatives different fields, or the same search"]
    chain = cfg.hash(without=("learning_rate", "batch_size", *by_batch)) + ":" + ",".join(by_batch)
    cells[cfg] = search.Cell(cfg, spec, chain)
    return []

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
    prune = spec.get("prune", True)
    meta = spec.get("meta", {})
    if not isinstance(meta, dict):
        problems.append(f"meta: expected a table ([meta]) of facts for the analysis; received {meta!r:.60}")
        meta = {}
    try:
        configs, cells, labels = expand_cells(spec, source, parsed)
    except GridError as e:
        raise GridError(source, problems + e.problems) from None
    if cells and "learning_rate" in selected:
        problems.append(f"--only learning_rate: this grid searches the learning rate ([search.learning_rate]), so "
                        f"there is none to select; --set learning_rate={selected['learning_rate']} runs that rate alone")
    if problems:
        raise GridError(source, problems)
    if selected and cells:
        kept = set(select([c.template for c in cells], selected, source))
        cells = [c for c in cells if c.template in kept]
    elif selected:
        configs = select(configs, selected, source)
    kept = {label_key(c) for c in configs} | {label_key(c.template, searched=True) for c in cells}
    return Sweep(path.stem, str(spec.get("description", "")), source, tuple(configs), prune, tuple(cells),
                 {h: lab for h, lab in labels.items() if h in kept}, meta)
