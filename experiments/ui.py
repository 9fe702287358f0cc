"""What ``make ui`` prints before it starts the MLflow UI: each experiment's runs page, in the model-training view.

``python -m experiments.ui --port 5000``. MLflow 3.17's UI opens an
experiment in the view its "GenAI / Model training" switch (top left) last
chose in that browser, GenAI at first, whatever the experiment's kind tag
says (``store.KIND_TAG``, which every experiment of the project carries): a
page of traces ("No data available") and no runs. These addresses choose the
model-training view; so does clicking "Model training" once, which the
browser then remembers. Reads the store only if it exists (a read-only
connection for SQLite), so it creates nothing.
"""

from __future__ import annotations

import argparse

from experiments.engine import store


def links(base: str) -> list[tuple[str, str]]:
    """(experiment name, its runs page) for every active experiment that holds runs, oldest first."""
    if not store.store_exists():
        return []
    c = store.reader()
    exps = sorted(c.search_experiments(), key=lambda e: int(e.experiment_id) if e.experiment_id.isdigit() else 0)
    return [(e.name, store.ui_url(base, e.experiment_id)) for e in exps
            if e.lifecycle_stage == "active" and c.search_runs([e.experiment_id], max_results=1)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.ui", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5000)
    a = ap.parse_args(argv)
    base = f"http://{a.host}:{a.port}"
    found = links(base)
    if not found:
        print(f"MLflow UI on {base}: the store {store.tracking_uri()} holds no runs yet (make sweep trains some)")
        return 0
    width = max(len(name) for name, _ in found)
    print(f"MLflow UI on {base}; each experiment's runs (the model-training view):")
    for name, url in found:
        print(f"  {name:<{width}}  {url}")
    print('(or open the start page and click "Model training" at the top left once: the browser remembers it)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
