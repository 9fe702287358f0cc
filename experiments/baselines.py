"""What a linear model reaches on each workload's data: the floor every target of the study must be beyond.

For every data set of the science sweep (its split: the same validation fraction and data seed), fitted on the
same training split, one MLflow run in the experiment ``baselines``:

- classification: multinomial logistic regression (scikit-learn, L-BFGS) at inverse regularisation C in
  :data:`CS`; ``train/loss`` is the lowest training cross-entropy over C (the least regularised fit), ``val/error``
  and ``val/loss`` the lowest validation error and cross-entropy over C (tuned on the validation split itself, so
  the linear model is given every advantage);
- regression: least squares and ridge at :data:`ALPHAS`; ``train/loss`` the lowest training MSE (per example, the
  mean over outputs, as the study's loss), ``val/loss`` the lowest validation MSE;
- next-token prediction (the text): the bigram, P(next | current token) from the training windows' counts with
  add-alpha smoothing at alpha in :data:`ALPHAS_BIGRAM`. It is the linear model of this task: a softmax of a
  linear function of the current token's one-hot vector, whose maximum-likelihood fit is the counts' frequencies
  (alpha -> 0). ``train/loss`` and ``val/loss`` are the lowest mean next-token cross-entropies over alpha (nats per
  token, as the transformer's loss), ``val/error`` one minus its next-token accuracy on the validation block, read
  on the validation windows the grids' runs read (their ``eval_val``: :func:`mbstudy.evaluate.validation_rows`).

A target a linear model reaches says little about training a network (the report prints these numbers beside the
targets and checks every target is beyond them). Usage: ``python -m experiments.baselines`` (``make baselines``);
seconds.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

CS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e4)
ALPHAS = (0.0, 1e-2, 1e-1, 1.0, 10.0, 100.0)
ALPHAS_BIGRAM = (1e-3, 1e-2, 0.1, 0.5, 1.0)
GRIDS = ("science", "lm")  # the grids whose workloads' data sets get a floor


def splits(grids=GRIDS) -> list[tuple[str, int, int, float, tuple, int]]:
    """The (data set, data seed, n_train, validation fraction, data options, validation examples read) of every
    workload of the grids, once each."""
    from experiments.engine import grid as loader

    out = set()
    for name in grids:
        sweep = loader.load(name)
        out |= {(c.dataset, c.data_seed, c.n_train, c.val_fraction, tuple(sorted(c.data_options().items())), c.eval_val)
                for c in sweep.configs or [cell.template for cell in sweep.cells]}
    return sorted(out)


def _cross_entropy(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0))))


def bigram(x_train, y_train, x_val, y_val, vocab: int, alpha: float) -> tuple[float, float, float]:
    """The add-``alpha`` bigram fitted on windows ``x_train -> y_train`` (token ids, ``(n, T)``, every position a
    (current, next) pair): its mean cross-entropy on the training and validation pairs, and its validation
    next-token accuracy.

    >>> x = np.array([[0, 1, 0, 1]]); y = np.array([[1, 0, 1, 0]])  # 0 -> 1 -> 0 ...: no uncertainty left
    >>> train, val, acc = bigram(x, y, x, y, vocab=2, alpha=1e-9)
    >>> round(train, 6), round(val, 6), acc
    (0.0, 0.0, 1.0)
    """
    cur, nxt = np.asarray(x_train, np.int64).ravel(), np.asarray(y_train, np.int64).ravel()
    counts = np.bincount(cur * vocab + nxt, minlength=vocab * vocab).reshape(vocab, vocab) + alpha
    logp = np.log(counts) - np.log(counts.sum(axis=1, keepdims=True))
    cv, nv = np.asarray(x_val, np.int64).ravel(), np.asarray(y_val, np.int64).ravel()
    return (float(-logp[cur, nxt].mean()), float(-logp[cv, nv].mean()),
            float((np.argmax(logp[cv], axis=1) == nv).mean()))


def fit(data, eval_val: int = 0) -> tuple[str, dict[str, float], dict[str, float]]:
    """The linear model's name, its metrics and the hyper-parameter each best came from; the validation metrics on
    the ``eval_val`` validation examples the runs read (0: all of them)."""
    from sklearn.linear_model import LogisticRegression, Ridge

    from mbstudy.evaluate import validation_rows

    rows = validation_rows(len(data.x_val), eval_val)
    x, y, xv, yv = data.x_train, data.y_train, data.x_val[rows], data.y_val[rows]
    if data.task == "next_token":
        fits = [bigram(x, y, xv, yv, data.n_outputs, a) for a in ALPHAS_BIGRAM]
        train, val, acc = (np.array(v) for v in zip(*fits))
        metrics = {"train/loss": float(train.min()), "val/loss": float(val.min()), "val/error": float(1 - acc.max())}
        return "bigram", metrics, {"alpha_train": ALPHAS_BIGRAM[int(np.argmin(train))],
                                   "alpha_val": ALPHAS_BIGRAM[int(np.argmin(val))]}
    if data.task == "classification":
        train, val, err, best = [], [], [], {}
        for c in CS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ConvergenceWarning at the weakest regularisation: still the floor
                m = LogisticRegression(C=c, max_iter=5000).fit(x, y)
            train.append(_cross_entropy(m.predict_proba(x), y))
            val.append(_cross_entropy(m.predict_proba(xv), yv))
            err.append(1.0 - float(m.score(xv, yv)))
        metrics = {"train/loss": min(train), "val/loss": min(val), "val/error": min(err)}
        best = {"C_train": CS[int(np.argmin(train))], "C_val": CS[int(np.argmin(err))]}
        return "logistic regression", metrics, best
    train, val = [], []
    for a in ALPHAS:
        m = Ridge(alpha=a).fit(x, y) if a > 0 else Ridge(alpha=1e-12).fit(x, y)
        train.append(float(np.mean((m.predict(x) - y) ** 2)))
        val.append(float(np.mean((m.predict(xv) - yv) ** 2)))
    metrics = {"train/loss": min(train), "val/loss": min(val)}
    return "least squares", metrics, {"alpha_train": ALPHAS[int(np.argmin(train))], "alpha_val": ALPHAS[int(np.argmin(val))]}


def main(argv=None) -> int:
    from experiments.engine.cli import no_options

    no_options("python -m experiments.baselines", __doc__, argv)
    from experiments.engine import provenance, run_writer, store
    from mbstudy import load_dataset
    from mbstudy.data import with_validation

    exp = store.get_or_create_experiment("baselines", __doc__.split("\n\n")[0])
    prov = provenance.provenance()
    done = {(r.data.params.get("data_digest"), int(r.data.params.get("eval_val", 0))) for r in store.search_all(
        store.client(), exp, "tags.`mbstudy.kind` = 'baseline' and attributes.status = 'FINISHED'")}  # fit once
    for dataset, data_seed, n_train, fraction, options, eval_val in splits():
        data = load_dataset(dataset, seed=data_seed, n_train=n_train or None, **dict(options))
        data = data if data.x_val is not None else with_validation(data, fraction)  # the text has its own
        if data.x_val is None or (data.digest, eval_val) in done:
            continue
        model, metrics, best = fit(data, eval_val)
        params = {"dataset": dataset, "data_seed": data_seed, "n_train": n_train, "val_fraction": fraction,
                  "model": model, "data_digest": data.digest, **dict(options), **best,
                  **({"eval_val": eval_val} if eval_val else {})}
        run_writer.write_run(exp, name=f"{dataset}-{model.replace(' ', '-')}", params=params,
                             tags={"mbstudy.kind": "baseline", **prov}, metrics=metrics)
        print(f"{dataset:10s} {model}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()), flush=True)
    print(f"logged to {store.tracking_uri()}, experiment 'baselines'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
