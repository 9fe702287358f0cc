"""make bench in its smallest mode: the output schema, and that it times the library's own code."""

import json

import pytest

from experiments.bench import cli, output, per_example
from experiments.engine import store
from mbstudy import grads as G


@pytest.mark.slow
def test_smallest_bench_schema_and_mlflow(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert cli.main(["--smallest", "--out", str(tmp_path / "results")]) == 0
    files = list((tmp_path / "results").glob("bench-*.json"))
    assert len(files) == 1 and files[0].with_suffix(".md").exists()
    out = json.loads(files[0].read_text())
    assert out["mode"] == "smallest" and {"cpu", "cores", "device", "jax_version"} <= set(out["machine"])
    rows = [r for r in out["rows"] if r["kind"] == "per_example"]
    assert [r["B"] for r in rows] == [8, 32]
    pow2 = [r for r in out["rows"] if r["kind"] == "pow2"]
    assert [r["k"] for r in pow2] == [4] and all(pow2[0][f"us/{n}"] > 0 for n in ("pow2_minus_1", "pow2", "pow2_plus_1"))
    for r in rows:
        assert r["kind"] == "per_example" and r["net"] == "40-100-100-10" and r["P"] == 15_210
        for key in ("s/batch", "s/vmap", "s/fast", "s/norms", "s/floor", "s/outer", "s/loop", "s/fused_mean_vmap",
                    "bytes/vmap", "bytes/fast", "bytes/norms", "bytes/floor",
                    "ratio/vmap_to_batch", "ratio/fast_to_floor", "ratio/outer_to_floor", "ratio/norms_to_batch"):
            assert key in r and r[key] > 0, key
        assert r["bytes/floor"] == r["B"] * r["P"] * 4
    assert any(t.startswith(("MET", "MISSED")) for t in out["targets"])
    md = files[0].with_suffix(".md").read_text()
    assert "| 40-100-100-10 | 15,210 | 8 |" in md
    exp = store.client().get_experiment_by_name("benchmarks")
    runs = store.search_all(store.client(), exp.experiment_id, "tags.`mbstudy.kind` = 'bench'")
    per_example = [r for r in runs if r.data.params.get("kind") == "per_example"]
    assert len(runs) == 3 and {r.data.params["B"] for r in per_example} == {"8", "32"}
    assert all("ratio/fast_to_floor" in r.data.metrics and r.data.tags.get("cpu") for r in per_example)


def test_bench_times_the_library_functions(monkeypatch):
    """No private copies: the benchmark calls mbstudy.grads' jitted functions."""
    called = set()
    for name in ("_batch_grad", "_per_sample_grads", "_per_sample_grads_fast", "_per_sample_grad_norms"):
        original = getattr(G, name)

        def spy(*a, _orig=original, _name=name, **k):
            called.add(_name)
            return _orig(*a, **k)

        spy.lower = original.lower  # memory analysis lowers the same jitted function
        monkeypatch.setattr(G, name, spy)
    row = per_example.bench_per_example("tiny", (5, 7, 3), 4, budget=0.0)
    assert called == {"_batch_grad", "_per_sample_grads", "_per_sample_grads_fast", "_per_sample_grad_norms"}
    assert row["P"] == 5 * 7 + 7 + 7 * 3 + 3


def test_targets_are_read_off_the_numbers():
    rows = [
        {"kind": "per_example", "net": "784-512-512-10", "B": 32, "ratio/fast_to_floor": 1.1, "ratio/norms_to_batch": 0.7},
        {"kind": "per_example", "net": "784-512-512-10", "B": 128, "ratio/fast_to_floor": 1.5, "ratio/norms_to_batch": 1.3},
        {"kind": "train", "B": 8, "ratio/torch_to_compiled": 6.0},
        {"kind": "train", "B": 64, "ratio/torch_to_compiled": 3.0},
    ]
    t = output.check_targets(rows)
    assert t[0].startswith("MISSED") and "worst 1.50" in t[0]
    assert t[1].startswith("MISSED") and "B=128" in t[1]
    assert t[2].startswith("MISSED") and "worst 3.0x" in t[2]


def test_transformer_targets_are_read_off_the_numbers():
    rows = [
        {"kind": "per_example_lm", "B": 8, "ratio/fast_to_max_floor_batch": 3.0, "ratio/norms_to_batch": 3.0},
        {"kind": "per_example_lm", "B": 32, "ratio/fast_to_max_floor_batch": 1.2, "ratio/norms_to_batch": 1.6},
        {"kind": "per_example_lm", "B": 128, "ratio/fast_to_max_floor_batch": 1.4, "ratio/norms_to_batch": 1.1},
        {"kind": "train_lm", "B": 8, "ratio/lm_to_mlp_flop_rate": 0.1},
        {"kind": "train_lm", "B": 16, "ratio/lm_to_mlp_flop_rate": 0.5},
        {"kind": "train_lm", "B": 64, "ratio/lm_to_mlp_flop_rate": 0.45},
    ]
    t = output.check_targets(rows)
    assert t == ["MET  transformer fast <= 1.5 x max(floor, batch gradient) (B >= 32): worst 1.40 (B=128)",
                 "MISSED transformer norms <= 1.5 x batch gradient (B >= 32): worst 1.60 (B=32)",
                 "MET  transformer step FLOP rate >= 40% of the MLP's (B >= 16): worst 45% (B=64)"]


@pytest.mark.slow
def test_transformer_rows_time_windows_of_text():
    from mbstudy import Transformer, load_dataset

    text = load_dataset("text", context=8, stride=8)
    row = per_example.bench_per_example("tiny-lm", Transformer(context=8, d_model=4, n_heads=1), 2, budget=0.0,
                                        data=text, kind="per_example_lm")
    assert row["kind"] == "per_example_lm" and row["P"] == Transformer(context=8, d_model=4, n_heads=1).num_params
    assert row["ratio/fast_to_max_floor_batch"] == row["s/fast"] / max(row["s/floor"], row["s/batch"])
    assert "| 2 |" in output.markdown([row], {"cpu": "c", "cores": "2", "device": "cpu", "jax_version": "j",
                                              "torch_version": "t"})
