"""One training run's configuration, in four modules: ``fields.py`` (:class:`TrainConfig`: the fields, their
defaults and roles, what a configuration derives), ``checks.py`` (every check, :class:`ConfigError`),
``identity.py`` (hash, run name, compiled-program key) and ``params.py`` (MLflow params and back)."""

from mbstudy.config.checks import INT32_MAX, ConfigError
from mbstudy.config.fields import FIELDS, HINTS, SEQUENCE_FIELDS, TrainConfig, coerced, problems

__all__ = ["ConfigError", "FIELDS", "HINTS", "INT32_MAX", "SEQUENCE_FIELDS", "TrainConfig", "coerced", "problems"]
