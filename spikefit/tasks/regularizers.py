"""Penalties on the fitted coupling weights, added to the mean negative log-likelihood."""

from __future__ import annotations

import torch

from spikefit.checks import non_negative


class Regularizer:
    """A penalty on the coupling weights, in the units of the objective (the mean negative
    log-likelihood, nats per neuron per bin): on N neurons and T bins, λ weighs as much as
    λ·N·T on the total log-likelihood, so useful strengths are small (e.g. 1/(N·T)).

    Args:
        strength: weight λ of the penalty (≥ 0).
    """

    def __init__(self, strength: float) -> None:
        self.strength = non_negative(f"{type(self).__name__}.strength", strength)

    def __call__(self, weights: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class L1(Regularizer):
    r"""Lasso: :math:`\lambda \sum_e |W_e|` (sparse couplings; non-smooth at 0, so prefer the
    Adam solver)."""

    def __call__(self, weights: torch.Tensor) -> torch.Tensor:
        return self.strength * weights.abs().sum()


class L2(Regularizer):
    r"""Ridge: :math:`\lambda \sum_e W_e^2`."""

    def __call__(self, weights: torch.Tensor) -> torch.Tensor:
        return self.strength * weights.square().sum()
