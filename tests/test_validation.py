"""Every malformed sweep definition or option exits with status 2, names the field, and creates nothing.

The cases are data: ``tests/corpus/bad_sweeps.toml``, one ``[[case]]`` each.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from experiments import sweep as sweep_mod

CORPUS = tomllib.loads((Path(__file__).with_name("corpus") / "bad_sweeps.toml").read_text())["case"]


def test_the_corpus_is_large_and_well_formed():
    assert len(CORPUS) >= 40
    ids = [c["id"] for c in CORPUS]
    assert len(ids) == len(set(ids)), "case ids are unique"
    for case in CORPUS:
        assert set(case) <= {"id", "args", "definition", "expect"} and case["expect"], case["id"]
        assert ("definition" in case) == ("{file}" in case["args"]), f"{case['id']}: a definition goes with {{file}}"


@pytest.mark.parametrize("case", CORPUS, ids=[c["id"] for c in CORPUS])
def test_a_bad_definition_or_option_exits_2_names_the_field_and_creates_nothing(case, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)  # a relative missing-file case resolves here; nothing may appear in it
    grid = tmp_path / "definition.toml"
    if "definition" in case:
        grid.write_text(case["definition"])
    args = [a.replace("{file}", str(grid)) for a in case["args"]] + ["--no-progress"]
    try:
        status = sweep_mod.main(args)
    except SystemExit as e:  # argparse's own errors (a non-number for --workers, an unknown --executor)
        status = e.code
    err = capsys.readouterr().err
    assert status == 2, f"exit {status}, expected 2:\n{err}"
    for text in case["expect"]:
        assert text in err, f"missing {text!r} in:\n{err}"
    assert "problem(s)" not in err, "one message per problem, without a preamble"
    if "usage:" not in err:  # argparse's own errors have their own form
        firsts = [line for line in err.splitlines() if not line.startswith(" ")]  # a TOML error's excerpt is indented
        assert firsts and all(line.startswith("error: ") for line in firsts), err
    if "definition" in case:
        assert err.count(str(grid)) == 1, f"the file is named once:\n{err}"
    created = sorted(p.name for p in tmp_path.rglob("*") if p != grid)
    assert created == [], f"nothing may be created; found {created}"
