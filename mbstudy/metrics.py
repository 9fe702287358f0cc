"""The metrics a training run records at every evaluation: one registry, read by training, logging and analysis.

Each entry says what the metric is and which summary it gets: ``final/<name>``
(the last finite value) for every metric with ``summary=True``, and
``best/<name>`` (``min`` or ``max`` over the run) where ``best`` is set. A
loss's extra metrics (:class:`mbstudy.losses.Loss`, e.g. cross-entropy's
accuracy) are recorded on the test set as ``test/<name>`` with ``best="max"``.

Adding a metric is one entry here and one line where it is computed
(:func:`mbstudy.evaluate.evaluate` or the training loop).
"""

from __future__ import annotations

import dataclasses

from mbstudy.losses import LOSSES


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str
    doc: str
    best: str | None = None  # "min" or "max": also log best/<name>
    summary: bool = True  # log final/<name>


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("train/loss", "loss on the full training set", best="min"),
    Metric("train/batch_loss", "mean batch loss of the steps since the previous evaluation"),
    Metric("test/loss", "loss on the test set", best="min"),
    Metric("grad/g_norm_sq", "||G||^2, the squared norm of the true gradient (unbiased estimate)"),
    Metric("grad/trace_cov", "tr(Sigma), the trace of the per-example gradient covariance"),
    Metric("grad/b_simple", "B_simple = tr(Sigma) / ||G||^2, the simple noise scale"),
    Metric("param/norm", "||theta||, the parameters' norm"),
    Metric("time/train_s", "cumulative seconds spent in training steps", summary=False),
)}


def history_metrics() -> dict[str, Metric]:
    """Every metric a run can record: :data:`METRICS` and each registered loss's ``test/<name>``."""
    extra = {f"test/{name}": Metric(f"test/{name}", f"{name} on the test set ({loss.name} losses)", best="max")
             for loss in LOSSES.values() for name in loss.metrics}
    return {**METRICS, **extra}
