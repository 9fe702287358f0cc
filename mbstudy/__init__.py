"""mbstudy: what mini-batch backpropagation computes, and what it costs."""

from mbstudy.data import DATASETS, Dataset, load_dataset
from mbstudy.grads import (
    accumulated_grad,
    batch_grad,
    per_sample_grad_norms,
    per_sample_grads,
    per_sample_grads_fast,
    single_output_grad,
)
from mbstudy.losses import LOSSES, REDUCTIONS
from mbstudy.model import MLP
from mbstudy.noise import NoiseStats, grad_noise_stats, two_batch_noise
from mbstudy.parallel import sharded_grad

__all__ = [
    "DATASETS",
    "Dataset",
    "LOSSES",
    "MLP",
    "NoiseStats",
    "REDUCTIONS",
    "accumulated_grad",
    "batch_grad",
    "grad_noise_stats",
    "load_dataset",
    "per_sample_grad_norms",
    "per_sample_grads",
    "per_sample_grads_fast",
    "sharded_grad",
    "single_output_grad",
    "two_batch_noise",
]
