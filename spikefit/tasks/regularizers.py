"""Penalties on the fitted coupling weights, added to the mean negative log-likelihood."""

from __future__ import annotations

import torch

from spikefit.checks import InputError, non_negative
from spikefit.tasks.solvers import LBFGS, Adam, Solver


class Regularizer:
    """A penalty on the coupling weights, in the units of the objective (the mean negative
    log-likelihood, nats per neuron per bin): on N neurons and T bins, λ weighs as much as
    λ·N·T on the total log-likelihood, so useful strengths are small (e.g. 1/(N·T)).

    Each regularizer names the solvers it works with (``allowed_solvers``) and refuses
    others itself (:meth:`check_solver`).

    Args:
        strength: weight λ of the penalty (≥ 0).
    """

    #: The solvers (and their subclasses) this penalty works with.
    allowed_solvers: tuple[type[Solver], ...] = (Solver,)
    #: Why the other solvers do not work with it.
    refusal = ""

    def __init__(self, strength: float) -> None:
        self.strength = non_negative(f"{type(self).__name__}.strength", strength)

    def __call__(self, weights: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check_solver(self, solver: Solver, field: str) -> None:
        """Raises an InputError naming ``field`` (this regularizer) unless ``solver`` is one
        of the :attr:`allowed_solvers`."""
        if not isinstance(solver, self.allowed_solvers):
            name, allowed = type(self).__name__, [s.__name__ for s in self.allowed_solvers]
            raise InputError(
                field,
                f"solver {type(solver).__name__} does not work with {name}: {self.refusal}",
                f"solver {' or '.join(allowed)} for {name}, or another penalty",
            )


class L1(Regularizer):
    r"""Lasso: :math:`\lambda \sum_e |W_e|` (sparse couplings; non-smooth at 0, so prefer the
    Adam solver; Newton's method needs a second derivative and is refused)."""

    allowed_solvers = (LBFGS, Adam)
    refusal = "L1 has no second derivative at 0, as Newton's method needs"

    def __call__(self, weights: torch.Tensor) -> torch.Tensor:
        return self.strength * weights.abs().sum()


class L2(Regularizer):
    r"""Ridge: :math:`\lambda \sum_e W_e^2`."""

    def __call__(self, weights: torch.Tensor) -> torch.Tensor:
        return self.strength * weights.square().sum()
