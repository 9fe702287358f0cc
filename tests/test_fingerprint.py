"""The MLP's numbers, bit for bit, across refactors.

A fingerprint is the sha256 of the exact bytes of every array the library
produces for the MLP: initial parameters, every gradient function, the noise
statistics, the training loss history of short runs, and the configuration
hashes and MLflow params that identify a run. The reference values were
written by the code BEFORE the extension-points refactor (issue 10, commit
364f13e); a refactor that changes one bit of any of them fails here, naming
which.

XLA compiles for the host's instruction set, and float32 reductions round
differently with AVX-512 than with AVX2 (float64 does not differ), so there
is one reference per instruction set, each written by that same pre-refactor
code: ``mlp.json`` on an AMD EPYC (AVX2), ``mlp-avx512.json`` on an Intel Xeon
with AVX-512 (364f13e's own test run there with MBSTUDY_WRITE_FINGERPRINT=1).

To rewrite the reference (only when a change of the numbers is intended and
said so in the commit): ``MBSTUDY_WRITE_FINGERPRINT=1 .venv/bin/python -m pytest tests/test_fingerprint.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mbstudy as mb
from mbstudy import load_dataset
from mbstudy.train import TrainConfig, train

def _instruction_set() -> str:
    """``avx512`` when the CPU has AVX-512 (what XLA then compiles for), else ``""``."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    return "avx512" if " avx512f" in flags else ""


REFERENCE = Path(__file__).with_name("fingerprints") / ("mlp-avx512.json" if _instruction_set() else "mlp.json")

# The history keys a run recorded when the reference was written; keys added since (the per-layer
# grad/layer{i}/... of issue 12) are left out of the comparison, every one of these is compared bit for bit.
HISTORY_KEYS = ("grad/b_simple", "grad/g_norm_sq", "grad/trace_cov", "param/norm", "step",
                "test/acc", "test/loss", "train/batch_loss", "train/loss")


def _old_keys(history: dict) -> dict:
    return {k: v for k, v in sorted(history.items()) if k in HISTORY_KEYS}


def _old_summary(summary: dict) -> dict:
    return {k: v for k, v in summary.items()
            if k in ("steps_to_target", "examples_to_target") or ("/" in k and k.split("/", 1)[1] in HISTORY_KEYS)}


def _digest(tree) -> str:
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        a = np.asarray(leaf)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _gradient_fingerprints(out: dict[str, str]) -> None:
    data = load_dataset("mnist1d")
    teacher = load_dataset("teacher")
    cases = {
        "ce-tanh": (mb.MLP((40, 100, 100, 10)), "cross_entropy", data.x_train[:12], data.y_train[:12]),
        "ce-relu": (mb.MLP((40, 32, 10), activation="relu"), "cross_entropy", data.x_train[:9], data.y_train[:9]),
        "mse-tanh": (mb.MLP((128, 64, 10)), "mse", teacher.x_train[:10], teacher.y_train[:10]),
    }
    for name, (net, loss, x, y) in cases.items():
        for dtype in (jnp.float32, jnp.float64):
            tag = f"{name}-{jnp.dtype(dtype).name}"
            params = net.init(jax.random.key(3), dtype=dtype)
            xs = jnp.asarray(x, dtype)
            ys = jnp.asarray(y, dtype) if loss == "mse" else jnp.asarray(y, jnp.int32)
            out[f"{tag}/init"] = _digest(params)
            out[f"{tag}/apply"] = _digest(net.apply(params, xs))
            for red in ("mean", "sum"):
                out[f"{tag}/batch_grad/{red}"] = _digest(mb.batch_grad(net, loss, params, xs, ys, red))
                out[f"{tag}/accumulated/{red}"] = _digest(
                    mb.accumulated_grad(net, loss, params, xs, ys, micro_batch_size=4, reduction=red))
                out[f"{tag}/sharded/{red}"] = _digest(mb.sharded_grad(net, loss, params, xs, ys, red))
                out[f"{tag}/single_output/{red}"] = _digest(mb.single_output_grad(net, loss, params, xs, ys, red))
            out[f"{tag}/accumulated/equal_weights"] = _digest(
                mb.accumulated_grad(net, loss, params, xs, ys, micro_batch_size=4, equal_weights=True))
            out[f"{tag}/per_sample_grads"] = _digest(mb.per_sample_grads(net, loss, params, xs, ys))
            out[f"{tag}/per_sample_grads_fast"] = _digest(mb.per_sample_grads_fast(net, loss, params, xs, ys))
            out[f"{tag}/norms"] = _digest(mb.per_sample_grad_norms(net, loss, params, xs, ys))
            out[f"{tag}/norms_sq"] = _digest(mb.per_sample_grad_norms(net, loss, params, xs, ys, squared=True))
            out[f"{tag}/noise"] = _digest(mb.grad_noise_stats(net, loss, params, xs, ys))
            out[f"{tag}/noise_fpc"] = _digest(
                mb.grad_noise_stats(net, loss, params, xs, ys, population_size=100))


TRAIN_CASES = {
    "sgd-mean": dict(optimizer="sgd", learning_rate=0.1),
    "sgd-sum": dict(optimizer="sgd", reduction="sum", learning_rate=0.01),
    "momentum": dict(optimizer="momentum", learning_rate=0.01, momentum=0.8),
    "adam": dict(optimizer="adam", learning_rate=1e-3, eps=1e-6),
    "adam-perturbed": dict(optimizer="adam", learning_rate=1e-3, init_perturbation=1e-7, seed=2),
    "relu-noise-batch": dict(optimizer="momentum", learning_rate=0.01, activation="relu", noise_batch=64),
    "diverges": dict(optimizer="sgd", learning_rate=1e3),
    "target": dict(optimizer="adam", learning_rate=1e-2, target_loss=1.5, stop_at_target=True),
}


def _training_fingerprints(out: dict[str, str]) -> None:
    data = load_dataset("mnist1d")
    for name, kw in TRAIN_CASES.items():
        cfg = TrainConfig(batch_size=32, steps=60, eval_every=20, **kw)
        r = train(cfg, data)
        hist = _old_keys(r.history)
        out[f"train/{name}/history"] = _digest([hist[k] for k in hist])
        out[f"train/{name}/keys"] = ",".join(hist)
        out[f"train/{name}/outcome"] = f"{r.outcome}:{r.steps_to_target}:{r.model_params}:{r.data_digest}"
        summary = _old_summary(r.summary())
        out[f"train/{name}/summary"] = json.dumps(summary, sort_keys=True)
        out[f"train/{name}/cfg_hash"] = cfg.hash()
        out[f"train/{name}/group_hash"] = cfg.hash(without=("seed",))
        out[f"train/{name}/params"] = json.dumps(
            {k: str(v) if not isinstance(v, list) else ",".join(map(str, v)) for k, v in cfg.as_dict().items()},
            sort_keys=True)
    teacher = load_dataset("teacher")
    cfg = TrainConfig(dataset="teacher", hidden=(64,), batch_size=10, steps=40, eval_every=20, learning_rate=0.01)
    r = train(cfg, teacher)
    out["train/teacher/history"] = _digest(list(_old_keys(r.history).values()))
    out["train/teacher/cfg_hash"] = cfg.hash()


def fingerprint() -> dict[str, str]:
    out: dict[str, str] = {}
    _gradient_fingerprints(out)
    _training_fingerprints(out)
    return out


@pytest.mark.slow
def test_the_mlp_numbers_are_those_before_the_refactor():
    now = fingerprint()
    if os.environ.get("MBSTUDY_WRITE_FINGERPRINT"):
        REFERENCE.parent.mkdir(exist_ok=True)
        REFERENCE.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
    ref = json.loads(REFERENCE.read_text())
    assert set(now) == set(ref), f"fingerprint keys differ: {sorted(set(now) ^ set(ref))}"
    changed = sorted(k for k in ref if now[k] != ref[k])
    assert not changed, f"{len(changed)} of {len(ref)} numbers changed bit for bit: {changed[:20]}"
