"""The benchmark's output: the Markdown tables, the targets read off the numbers, one MLflow run per row."""

from __future__ import annotations

import time

from experiments.engine import provenance, run_writer, store


def markdown(rows: list[dict], info: dict) -> str:
    out = [f"Machine: {info['cpu']}, {info['cores']} cores, {info['device']}; jax {info['jax_version']}, "
           f"torch {info['torch_version']}. Medians; ratios within this run.", ""]
    pe = [r for r in rows if r["kind"] == "per_example"]
    if pe:
        out += ["**Per-example gradients**, time relative to the batch-mean gradient "
                "(floor: writing B × P float32):", "",
                "| net | P | B | batch µs | vmap | fast | norms | floor | fast/floor | outer products/floor | Python loop | torch.func vmap | mean(vmap) fused | peak MB vmap / fast / norms |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in pe:
            tv = f"{r['ratio/torch_vmap_to_batch']:.1f}" if "ratio/torch_vmap_to_batch" in r else "–"
            out.append(
                f"| {r['net']} | {r['P']:,} | {r['B']} | {r['s/batch'] * 1e6:.0f} | {r['ratio/vmap_to_batch']:.1f} | "
                f"{r['ratio/fast_to_batch']:.1f} | {r['ratio/norms_to_batch']:.2f} | {r['ratio/floor_to_batch']:.1f} | "
                f"{r['ratio/fast_to_floor']:.2f} | {r['ratio/outer_to_floor']:.2f} | {r['ratio/loop_to_batch']:.0f} | {tv} | {r['ratio/fused_mean_vmap_to_batch']:.2f} | "
                f"{r['bytes/vmap'] / 1e6:.1f} / {r['bytes/fast'] / 1e6:.1f} / {r['bytes/norms'] / 1e6:.2f} |")
        out.append("")
    tr = [r for r in rows if r["kind"] == "train"]
    if tr:
        out += ["**Training step** (MNIST-1D MLP 40-100-100-10, SGD + momentum), µs per step:", "",
                "| B | mbstudy compiled loop | leanest scan | Python loop over jitted step | PyTorch eager | torch / compiled |",
                "|---|---|---|---|---|---|"]
        for r in tr:
            t = f"{r['s/torch_eager'] * 1e6:.1f}" if "s/torch_eager" in r else "–"
            rt = f"{r['ratio/torch_to_compiled']:.1f}×" if "ratio/torch_to_compiled" in r else "–"
            out.append(f"| {r['B']} | {r['s/compiled'] * 1e6:.1f} | {r['s/lean_scan'] * 1e6:.1f} | "
                       f"{r['s/python_loop'] * 1e6:.1f} | {t} | {rt} |")
        out.append("")
    cnn = [r for r in rows if r["kind"] == "train_cnn"]
    if cnn:
        out += ["**Training step of the MNIST-1D CNN** (SGD + momentum), µs per step, and FLOP rates "
                "(XLA's count of one step's operations over its time) against the MLP's at the same B:", "",
                "| B | mbstudy compiled loop | leanest scan | compiled / leanest | CNN GFLOP/s | MLP GFLOP/s | CNN / MLP rate |",
                "|---|---|---|---|---|---|---|"]
        out += [f"| {r['B']} | {r['s/compiled'] * 1e6:.1f} | {r['s/lean_scan'] * 1e6:.1f} | "
                f"{r['ratio/compiled_to_lean_scan']:.2f} | {r['gflops/cnn']:.1f} | {r['gflops/mlp']:.1f} | "
                f"{r['ratio/cnn_to_mlp_flop_rate']:.2f} |" for r in cnn]
        out.append("")
    out += _lm_markdown(rows)
    p2 = [r for r in rows if r["kind"] == "pow2"]
    if p2:
        out += ["**Powers of two** (compiled loop), µs per step:", "", "| k | 2^k − 1 | 2^k | 2^k + 1 |", "|---|---|---|---|"]
        out += [f"| {r['k']} | {r['us/pow2_minus_1']:.1f} | {r['us/pow2']:.1f} | {r['us/pow2_plus_1']:.1f} |" for r in p2]
        out.append("")
    pm = [r for r in rows if r["kind"] == "permutation"]
    if pm:
        r = pm[0]
        out.append(f"**Permutation of {r['n']} indices**: jax.random.permutation {r['s/jax_permutation'] * 1e6:.0f} µs, "
                   f"NumPy {r['s/numpy_permutation'] * 1e6:.0f} µs ({r['ratio/jax_to_numpy']:.0f}×).\n")
    lg = [r for r in rows if r["kind"] == "logging"]
    if lg:
        r = lg[0]
        out.append(f"**MLflow logging** of a default-sweep run (creating it and logging its result; one run per "
                   f"B = {r['batch_sizes']}): {r['s/log_per_run'] * 1e3:.0f} ms on average, "
                   f"{r['ratio/log_to_train_eval']:.1%} of their training and evaluation time.")
    return "\n".join(out) + "\n"


def check_targets(rows: list[dict]) -> list[str]:
    """The issue's targets, read off this run's numbers: one line each, met or missed and by how much."""
    lines = []
    big = [r for r in rows if r["kind"] == "per_example" and r["net"] == "784-512-512-10" and r["B"] >= 32]
    if big:
        worst = max(r["ratio/fast_to_floor"] for r in big)
        lines.append(f"{'MET ' if worst <= 1.3 else 'MISSED'} fast <= 1.3 x floor (670k net, B >= 32): worst {worst:.2f}")
    pe = [r for r in rows if r["kind"] == "per_example" and not r["net"].startswith("cnn")]
    if pe:
        worst = max(r["ratio/norms_to_batch"] for r in pe)
        w = max(pe, key=lambda r: r["ratio/norms_to_batch"])
        lines.append(f"{'MET ' if worst <= 1.2 else 'MISSED'} norms <= 1.2 x batch gradient (every B): worst {worst:.2f} "
                     f"({w['net']}, B={w['B']})")
    lines += _cnn_targets(rows)
    lines += _lm_targets(rows)
    tr = [r for r in rows if r["kind"] == "train" and r["B"] <= 64 and "ratio/torch_to_compiled" in r]
    if tr:
        worst = min(r["ratio/torch_to_compiled"] for r in tr)
        lines.append(f"{'MET ' if worst >= 4 else 'MISSED'} compiled loop >= 4 x faster than PyTorch eager (B <= 64): "
                     f"worst {worst:.1f}x")
    elif any(r["kind"] == "train" for r in rows):
        lines.append("SKIPPED compiled vs PyTorch: torch is not installed (make setup-bench)")
    lg = [r for r in rows if r["kind"] == "logging"]
    if lg:
        ratio = lg[0]["ratio/log_to_train_eval"]
        lines.append(f"{'MET ' if ratio <= 0.05 else 'MISSED'} MLflow logging <= 5% of training + evaluation "
                     f"(default sweep, one run per B): {ratio:.1%}")
    return lines


def _cnn_targets(rows: list[dict]) -> list[str]:
    """The CNN's targets (issue 12), read off this run's numbers."""
    lines = []
    cnn = [r for r in rows if r["kind"] == "per_example" and r["net"].startswith("cnn")]
    if cnn:
        big = [r for r in cnn if r["B"] >= 32]
        if big:
            worst = max(r["ratio/fast_to_floor"] for r in big)
            lines.append(f"{'MET ' if worst <= 1.3 else 'MISSED'} CNN fast <= 1.3 x floor (B >= 32): worst {worst:.2f}")
        worst = max(r["ratio/fast_to_batch"] / r["ratio/vmap_to_batch"] for r in cnn)
        lines.append(f"{'MET ' if worst < 1 else 'MISSED'} CNN fast faster than vmap(grad) at every B: "
                     f"worst fast / vmap {worst:.2f}")
        worst = max(r["ratio/norms_to_batch"] for r in cnn)
        lines.append(f"{'MET ' if worst <= 1.5 else 'MISSED'} CNN norms <= 1.5 x batch gradient (every B): worst {worst:.2f}")
    tr = [r for r in rows if r["kind"] == "train_cnn"]
    if tr:
        worst = max(r["ratio/compiled_to_lean_scan"] for r in tr)
        lines.append(f"{'MET ' if worst <= 2 else 'MISSED'} CNN step within 2 x the leanest scan: worst {worst:.2f}")
        big = [r for r in tr if r["B"] >= 16]
        if big:
            worst = min(r["ratio/cnn_to_mlp_flop_rate"] for r in big)
            lines.append(f"{'MET ' if worst >= 0.4 else 'MISSED'} CNN FLOP rate >= 40% of the MLP's (B >= 16): "
                         f"worst {worst:.0%}")
    return lines


def _lm_markdown(rows: list[dict]) -> list[str]:
    """The transformer's tables (issue 24): per-example gradients on windows of text, and the training step."""
    out = []
    pe = [r for r in rows if r["kind"] == "per_example_lm"]
    if pe:
        out += [f"**Per-example gradients of the transformer** (P = {pe[0]['P']:,}; windows of the text data set, "
                "next-token cross-entropy), time relative to the batch-mean gradient:", "",
                "| B | batch µs | vmap | fast | norms | floor | fast / max(floor, batch) | outer products/floor | "
                "Python loop | mean(vmap) fused | peak MB vmap / fast / norms |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        out += [f"| {r['B']} | {r['s/batch'] * 1e6:.0f} | {r['ratio/vmap_to_batch']:.2f} | {r['ratio/fast_to_batch']:.2f} | "
                f"{r['ratio/norms_to_batch']:.2f} | {r['ratio/floor_to_batch']:.2f} | {r['ratio/fast_to_max_floor_batch']:.2f} | "
                f"{r['ratio/outer_to_floor']:.2f} | {r['ratio/loop_to_batch']:.1f} | {r['ratio/fused_mean_vmap_to_batch']:.2f} | "
                f"{r['bytes/vmap'] / 1e6:.1f} / {r['bytes/fast'] / 1e6:.1f} / {r['bytes/norms'] / 1e6:.2f} |" for r in pe]
        out.append("")
    tr = [r for r in rows if r["kind"] == "train_lm"]
    if tr:
        out += [f"**Training step of the transformer** (P = {tr[0]['P']:,}; SGD + momentum unless named), µs per step, "
                "and FLOP rates against the MNIST-1D MLP's at the same B:", "",
                "| B | mbstudy compiled loop | Adam | leanest scan | compiled / leanest | transformer GFLOP/s | "
                "MLP GFLOP/s | transformer / MLP rate |",
                "|---|---|---|---|---|---|---|---|"]
        out += [f"| {r['B']} | {r['s/compiled'] * 1e6:.1f} | {r['s/adam_compiled'] * 1e6:.1f} | {r['s/lean_scan'] * 1e6:.1f} | "
                f"{r['ratio/compiled_to_lean_scan']:.2f} | {r['gflops/lm']:.1f} | {r['gflops/mlp']:.1f} | "
                f"{r['ratio/lm_to_mlp_flop_rate']:.2f} |" for r in tr]
        out.append("")
    return out


def _lm_targets(rows: list[dict]) -> list[str]:
    """The transformer's targets (issue 24), read off this run's numbers."""
    lines = []
    big = [r for r in rows if r["kind"] == "per_example_lm" and r["B"] >= 32]
    if big:
        w = max(big, key=lambda r: r["ratio/fast_to_max_floor_batch"])
        lines.append(f"{'MET ' if w['ratio/fast_to_max_floor_batch'] <= 1.5 else 'MISSED'} transformer fast <= 1.5 x "
                     f"max(floor, batch gradient) (B >= 32): worst {w['ratio/fast_to_max_floor_batch']:.2f} (B={w['B']})")
        w = max(big, key=lambda r: r["ratio/norms_to_batch"])
        lines.append(f"{'MET ' if w['ratio/norms_to_batch'] <= 1.5 else 'MISSED'} transformer norms <= 1.5 x batch "
                     f"gradient (B >= 32): worst {w['ratio/norms_to_batch']:.2f} (B={w['B']})")
    tr = [r for r in rows if r["kind"] == "train_lm" and r["B"] >= 16]
    if tr:
        w = min(tr, key=lambda r: r["ratio/lm_to_mlp_flop_rate"])
        lines.append(f"{'MET ' if w['ratio/lm_to_mlp_flop_rate'] >= 0.4 else 'MISSED'} transformer step FLOP rate >= 40% "
                     f"of the MLP's (B >= 16): worst {w['ratio/lm_to_mlp_flop_rate']:.0%} (B={w['B']})")
    return lines


def log_to_mlflow(rows: list[dict], info: dict, mode: str) -> str:
    """A session run, and under it one run per row (params: its strings and sizes; metrics: its numbers)."""
    exp = store.get_or_create_experiment("benchmarks", "make bench: cost of per-example gradients and training steps")
    prov = provenance.provenance()
    with run_writer.writing_run(exp, name=f"bench-{mode}-{time.strftime('%Y%m%d-%H%M%S')}",
                              tags={"mbstudy.kind": "bench_session", **prov, **info}) as session:
        for r in rows:
            params = {k: v for k, v in r.items() if isinstance(v, str) or k in ("P", "B", "k")}
            params["device"] = info["device"]
            run_writer.write_run(exp, params=params, timestamp=0,
                               tags={"mbstudy.kind": "bench", "mlflow.parentRunId": session.run_id,
                                     "bench_session": session.run_id, **prov, **info, "mode": mode},
                               metrics={k: v for k, v in r.items() if k not in params and isinstance(v, (int, float))})
    return session.run_id
