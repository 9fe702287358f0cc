"""mbstudy: what mini-batch backpropagation computes, and what it costs."""

from mbstudy.config import ConfigError, TrainConfig
from mbstudy.data import DATASETS, DataSource, Dataset, load_dataset
from mbstudy.grads import (
    accumulated_grad,
    batch_grad,
    per_sample_grad_norms,
    per_sample_grads,
    per_sample_grads_fast,
    single_output_grad,
)
from mbstudy.losses import LOSSES, REDUCTIONS, Loss
from mbstudy.model import CNN, MLP, Network, mnist1d_cnn
from mbstudy.noise import NoiseStats, grad_noise_stats, layers_of_type, subset_noise, two_batch_noise
from mbstudy.optimizers import OPTIMIZERS, Optimizer
from mbstudy.parallel import sharded_grad
from mbstudy.text import load_text
from mbstudy.train import RunResult, train
from mbstudy.transformer import Transformer

# the transformer layers' per-example rules register themselves on import (a module of their own, as Opacus keeps
# its grad_sample/ files); importing them here, after the layers, keeps mbstudy.transformer free of a circle
from mbstudy import per_example_seq  # noqa: E402, F401

__all__ = [
    "CNN",
    "ConfigError",
    "DATASETS",
    "DataSource",
    "Dataset",
    "LOSSES",
    "Loss",
    "MLP",
    "Network",
    "NoiseStats",
    "OPTIMIZERS",
    "Optimizer",
    "REDUCTIONS",
    "RunResult",
    "TrainConfig",
    "Transformer",
    "accumulated_grad",
    "batch_grad",
    "grad_noise_stats",
    "layers_of_type",
    "load_dataset",
    "load_text",
    "mnist1d_cnn",
    "per_sample_grad_norms",
    "per_sample_grads",
    "per_sample_grads_fast",
    "sharded_grad",
    "single_output_grad",
    "subset_noise",
    "train",
    "two_batch_noise",
]
