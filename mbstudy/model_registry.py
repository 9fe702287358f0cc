"""The model registry: the models a configuration can name (``TrainConfig.model``), one builder each.

A builder takes the configuration and the loaded data set and returns a model
of :mod:`mbstudy.model`'s protocol; the data fix the input and output sizes.
Adding a model is one :func:`register_model` call.

>>> from mbstudy import load_dataset
>>> from mbstudy.config import TrainConfig
>>> from mbstudy.model_registry import build
>>> build(TrainConfig(model="cnn"), load_dataset("mnist1d"))
CNN(input_length=40, channels=25, n_classes=10, init_scheme='he_normal')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mbstudy.model import CNN, MLP
from mbstudy.transformer import Transformer

Builder = Callable[[Any, Any], Any]  # (TrainConfig, Dataset) -> model
INIT_DEFAULT = "he_normal"  # TrainConfig.init's default, the only one the transformer takes

MODELS: dict[str, Builder] = {}


def register_model(name: str, builder: Builder) -> Builder:
    """Make ``TrainConfig(model=name)`` build its model with ``builder(cfg, data)``; returns the builder."""
    if name in MODELS:  # re-registering would change what a stored cfg_hash trains
        raise ValueError(f"register_model: {name!r} is taken; choose another name")
    MODELS[name] = builder
    return builder


# the MLP: data.n_inputs -> *hidden -> data.n_outputs, with cfg.activation
register_model("mlp", lambda cfg, data: MLP((data.n_inputs, *cfg.hidden, data.n_outputs), cfg.activation,
                                            cfg.init))
# the MNIST-1D paper's CNN (ReLU; cfg.hidden and cfg.activation are not read); its input length is the data's
register_model("cnn", lambda cfg, data: CNN(data.n_inputs, cfg.channels, data.n_outputs, cfg.init))


def _transformer(cfg: Any, data: Any) -> Transformer:
    """The decoder-only transformer: vocabulary and context from the data (windows of ``cfg.context`` tokens)."""
    if data.task != "next_token":
        raise ValueError(f"the transformer reads sequences of tokens; expected a next_token data set such as 'text'; "
                         f"received a {data.task} one")
    if cfg.init != INIT_DEFAULT:
        raise ValueError(f"the transformer draws its own initial values; init applies to the mlp and the cnn: "
                         f"expected init={INIT_DEFAULT!r}; received {cfg.init!r}")
    return Transformer(vocab=data.n_outputs, context=data.n_inputs, d_model=cfg.d_model, n_heads=cfg.n_heads,
                       n_blocks=cfg.n_blocks)


register_model("transformer", _transformer)


def build(cfg: Any, data: Any) -> Any:
    """The model ``cfg.model`` names, for the data set ``data``."""
    if cfg.model not in MODELS:
        raise ValueError(f"model: expected one of {list(MODELS)}; received {cfg.model!r}")
    return MODELS[cfg.model](cfg, data)
