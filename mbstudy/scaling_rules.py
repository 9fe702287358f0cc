"""Scaling rules: how Adam's hyper-parameters move when the batch size does (Q8).

Two published rules, as pure functions of Python numbers (the grids of
``experiments/grids/beta2.toml`` and ``sde.toml`` hold their values, and
``tests/test_scaling_rules.py`` checks both against hand-computed numbers):

- **β2 at a fixed half-life in examples** (Marek et al. 2025, arXiv:2507.07101).
  Adam's second moment averages squared gradients with weight β2 per step; after
  ``n`` steps a gradient's weight has fallen to β2ⁿ, to one half after
  ``ln 0.5 / ln β2`` steps, which is ``t½ = B ln 0.5 / ln β2`` examples. Holding
  ``t½`` fixed as B changes gives ``β2(B) = 0.5^(B / t½)``, equivalently
  ``β2' = β2^(B'/B)``. β2 = 0.999 at B = 128 is t½ ≈ 88,700 examples.

- **The SDE square-root rule** (Malladi et al. 2022, arXiv:2205.10287): from a
  batch size B to κB, ``η → √κ η``, ``1 − β1 → κ(1 − β1)``, ``1 − β2 → κ(1 − β2)``,
  ``ε → ε / √κ``; it needs ``κ(1 − β1) < 1`` (β1 must stay a decay rate). To first
  order in ``1 − β2`` its β2 is the half-life rule's: ``β2^κ ≈ 1 − κ(1 − β2)``.

The linear rule (``η → κη``, betas fixed; Goyal et al. 2017 for SGD) and no
rescaling are the two baselines Q8 compares with.

>>> round(half_life(0.999, 128))
88678
>>> round(beta2_at(1, half_life(0.999, 128)), 8), round(beta2_at(1024, half_life(0.999, 128)), 6)
(0.99999218, 0.992028)
>>> sde_rule(4, learning_rate=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)
{'learning_rate': 0.002, 'beta1': 0.6, 'beta2': 0.996, 'eps': 5e-09}
"""

from __future__ import annotations

import math

REFERENCE = (0.999, 128)  # (β2, B): optax's default β2 at the batch size it is "tuned" for in the study


def _check_beta(name: str, beta: float) -> None:
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and 0 < beta < 1):
        raise ValueError(f"{name}: expected 0 < {name} < 1; received {beta!r}")


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a finite number > 0; received {value!r}")


def half_life(beta2: float, batch_size: float) -> float:
    """The half-life in examples of an exponential average with decay ``beta2`` per step of ``batch_size``:
    ``B ln 0.5 / ln β2``."""
    _check_beta("beta2", beta2)
    _check_positive("batch_size", batch_size)
    return batch_size * math.log(0.5) / math.log(beta2)


def beta2_at(batch_size: float, half_life_examples: float) -> float:
    """β2 whose half-life is ``half_life_examples`` examples at this batch size: ``0.5^(B / t½)``."""
    _check_positive("batch_size", batch_size)
    _check_positive("half_life_examples", half_life_examples)
    return 0.5 ** (batch_size / half_life_examples)


def rescale_beta(beta: float, from_batch: float, to_batch: float) -> float:
    """The same half-life at another batch size: ``β^(B'/B)`` (Marek et al.'s rule, for either beta)."""
    _check_beta("beta", beta)
    _check_positive("from_batch", from_batch)
    _check_positive("to_batch", to_batch)
    return beta ** (to_batch / from_batch)


def sde_rule(kappa: float, *, learning_rate: float, beta1: float, beta2: float, eps: float) -> dict[str, float]:
    """Malladi et al.'s square-root rule from B to κB (see the module docstring); refuses κ(1 − β1) ≥ 1."""
    _check_positive("kappa", kappa)
    _check_beta("beta1", beta1)
    _check_beta("beta2", beta2)
    _check_positive("learning_rate", learning_rate)
    _check_positive("eps", eps)
    if kappa * (1 - beta1) >= 1 - 1e-12 or kappa * (1 - beta2) >= 1 - 1e-12:  # 10 x (1 - 0.9) is 0.99999...
        raise ValueError(f"kappa: the square-root rule needs kappa (1 - beta1) < 1 and kappa (1 - beta2) < 1; "
                         f"received kappa={kappa!r} with beta1={beta1!r}, beta2={beta2!r} (largest kappa: "
                         f"{1 / (1 - min(beta1, beta2)):.4g}, exclusive)")
    root = math.sqrt(kappa)
    return {"learning_rate": _tidy(learning_rate * root), "beta1": _tidy(1 - kappa * (1 - beta1)),
            "beta2": _tidy(1 - kappa * (1 - beta2)), "eps": _tidy(eps / root)}


def linear_rule(kappa: float, *, learning_rate: float, beta1: float, beta2: float, eps: float) -> dict[str, float]:
    """The linear rule from B to κB: ``η → κη``, everything else as it was."""
    _check_positive("kappa", kappa)
    _check_positive("learning_rate", learning_rate)
    return {"learning_rate": _tidy(learning_rate * kappa), "beta1": beta1, "beta2": beta2, "eps": eps}


def _tidy(x: float) -> float:
    """``x`` to 12 significant digits: 1 − 4 × 0.1 is 0.6, not 0.6000000000000001, so a grid file can hold it."""
    return float(f"{x:.12g}")
