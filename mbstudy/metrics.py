"""The metrics a training run records at every evaluation: one registry, read by training, logging and analysis.

Each entry says what the metric is and which summary it gets: ``final/<name>``
(the last finite value) for every metric with ``summary=True``, and
``best/<name>`` (``min`` or ``max`` over the run) where ``best`` is set. A
loss's extra metrics (:class:`mbstudy.losses.Loss`, e.g. cross-entropy's
accuracy) are recorded on the test set as ``test/<name>`` (and on the validation
split, when there is one, as ``val/<name>``) with ``best="max"``.

Per-layer metrics, one set per parametrised layer whatever their number, are
named ``grad/layer{i}/<name>`` (i = 0, 1, ... in the order of the model's
params) and follow :data:`LAYER_METRICS`; :func:`metric_for` resolves any
recorded key, fixed or per-layer, to its entry.

Adding a metric is one entry here and one line where it is computed
(:func:`mbstudy.evaluate.evaluate` or the training loop).
"""

from __future__ import annotations

import dataclasses
import re

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
    Metric("val/loss", "loss on the validation split (runs with val_fraction > 0)", best="min"),
    Metric("grad/g_norm_sq", "||G||^2, the squared norm of the true gradient (unbiased estimate)"),
    Metric("grad/trace_cov", "tr(Sigma), the trace of the per-example gradient covariance"),
    Metric("grad/b_simple", "B_simple = tr(Sigma) / ||G||^2, the simple noise scale"),
    Metric("param/norm", "||theta||, the parameters' norm"),
    Metric("time/train_s", "cumulative seconds spent in training steps", summary=False),
)}


# A run's targets and the summary metric of each (also RunResult's attribute): the steps at the first
# evaluation that reached it. Training, pruning and the analysis read this one table.
TRAIN_TARGET, VAL_TARGET = "loss", "val"  # the training-loss target (target_loss) and the validation target
TARGETS = {TRAIN_TARGET: "steps_to_target", VAL_TARGET: "steps_to_val_target"}
TARGET_LABELS = {TRAIN_TARGET: "training-loss target", VAL_TARGET: "validation target"}  # how tables name them


def is_timing(key: str) -> bool:
    """Whether a logged metric is a wall-clock measurement (``time/<name>``, and a summary's ``time_to_target`` /
    ``time_to_val_target``): different in every run of the same configuration, so comparisons of two runs'
    numbers leave these out.

    >>> [k for k in ("time/train_s", "time_to_target", "train/loss", "steps_to_target") if is_timing(k)]
    ['time/train_s', 'time_to_target']
    """
    return key.startswith(("time/", "time_to_"))


def history_metrics() -> dict[str, Metric]:
    """Every metric a run can record: :data:`METRICS` and each registered loss's ``test/<name>`` and ``val/<name>``."""
    extra = {f"{split}/{name}": Metric(f"{split}/{name}", f"{name} on the {what} set ({loss.name} losses)", best="max")
             for loss in LOSSES.values() for name in loss.metrics
             for split, what in (("test", "test"), ("val", "validation"))}
    return {**METRICS, **extra}


# Per-layer noise statistics (Gray et al. 2024, arXiv:2411.00999), recorded as grad/layer{i}/<name>.
LAYER_METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("g_norm_sq", "||G_l||^2 of parametrised layer i's parameters (unbiased estimate)"),
    Metric("trace_cov", "tr(Sigma_l), the per-example gradient covariance's trace over layer i's parameters"),
    Metric("b_simple", "layer i's simple noise scale tr(Sigma_l) / ||G_l||^2"),
)}
_LAYER_KEY = re.compile(r"grad/layer(\d+)/(.+)")


def layer_metric_name(index: int, name: str) -> str:
    """``grad/layer{index}/{name}``: where a per-layer metric of :data:`LAYER_METRICS` is recorded."""
    return f"grad/layer{index}/{name}"


def metric_for(key: str) -> Metric | None:
    """The registry entry of a recorded key: a fixed metric, a loss's ``test/<name>``, or a per-layer
    ``grad/layer{i}/<name>`` (its entry renamed to the key); None for an unknown key."""
    found = history_metrics().get(key)
    if found is None and (m := _LAYER_KEY.fullmatch(key)) and m.group(2) in LAYER_METRICS:
        found = dataclasses.replace(LAYER_METRICS[m.group(2)], name=key)
    return found
