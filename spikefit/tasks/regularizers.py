"""Penalties on the fitted coupling weights, added to the mean negative log-likelihood."""

from __future__ import annotations

import torch

from spikefit.checks import InputError, non_negative
from spikefit.tasks.solvers import LBFGS, Adam, ProximalGradient, Solver


class Regularizer:
    """A penalty on the coupling weights, in the units of the objective (the mean negative
    log-likelihood, nats per neuron per bin): on N neurons and T bins, λ weighs as much as
    λ·N·T on the total log-likelihood, so useful strengths are small (e.g. 1/(N·T)).

    Each regularizer names the solvers it works with (``allowed_solvers``) and refuses
    others itself (:meth:`check_solver`). Called on the weights [E] (or [E, B] on a basis of B
    coupling kernels: one group per pair), it takes an optional strength per pair [E]
    (e.g. that of the pair's postsynaptic unit) in place of λ.

    Args:
        strength: weight λ of the penalty (≥ 0).
    """

    #: The solvers (and their subclasses) this penalty works with.
    allowed_solvers: tuple[type[Solver], ...] = (Solver,)
    #: Why the other solvers do not work with it.
    refusal = ""
    #: The factor on λ of the penalty on the self-filter weights fitted per neuron (0: none).
    self_filter = 0.0
    #: Whether the penalty is differentiable (else its :meth:`prox` serves the proximal
    #: solver).
    smooth = False

    def __init__(self, strength: float) -> None:
        self.strength = non_negative(f"{type(self).__name__}.strength", strength)

    def __call__(
        self, weights: torch.Tensor, strength: torch.Tensor | float | None = None
    ) -> torch.Tensor:
        """The penalty: λ (or ``strength`` [E], per pair) times each pair's :meth:`cost`."""
        cost = self.cost(weights.reshape(len(weights), -1))
        return ((self.strength if strength is None else strength) * cost).sum()

    def cost(self, groups: torch.Tensor) -> torch.Tensor:
        """The unweighted penalty [E] of every pair's weights [E, B]."""
        raise NotImplementedError

    def prox(self, groups: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        r"""The proximal operator :math:`\arg\min_x \tfrac12 \lVert x - w_e \rVert^2 +
        \tau_e\, \mathrm{cost}(x)` of every pair's weights [E, B] for its threshold
        :math:`\tau_e` [E] (the step size times its strength), for
        :class:`~spikefit.tasks.solvers.ProximalGradient`."""
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
    r"""Lasso: :math:`\lambda \sum_e |W_e|` (sparse couplings; non-smooth at 0: the
    :class:`~spikefit.tasks.solvers.ProximalGradient` solver sets weights to exactly 0, L-BFGS
    and Adam only approach it; Newton's method needs a second derivative and is refused)."""

    allowed_solvers = (LBFGS, Adam, ProximalGradient)
    refusal = "L1 has no second derivative at 0, as Newton's method needs"

    def cost(self, groups: torch.Tensor) -> torch.Tensor:
        return groups.abs().sum(1)

    def prox(self, groups: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        """Soft thresholding: every weight moved towards 0 by τ, and 0 within τ of it."""
        return groups.sign() * (groups.abs() - threshold.view(-1, 1)).clamp(min=0)


class L2(Regularizer):
    r"""Ridge: :math:`\lambda \sum_e W_e^2` (every basis weight of every pair's filter), and
    with ``self_filter`` = ρ > 0 also :math:`\rho \lambda_i \sum_a v_{ia}^2` on the
    self-filter weights fitted per neuron (``per_neuron: [self_weights]``; not the biases).

    Args:
        strength: weight λ of the penalty (≥ 0).
        self_filter: the factor ρ ≥ 0 on λ for the per-neuron self-filter weights (true: 1,
            false: 0, not penalized). A small ρ keeps the post-spike filters finite where
            a unit never fires in the bins right after its spikes, without shrinking them.
    """

    smooth = True

    def __init__(self, strength: float, self_filter: bool | float = False) -> None:
        super().__init__(strength)
        self.self_filter = non_negative(f"{type(self).__name__}.self_filter", float(self_filter))

    def cost(self, groups: torch.Tensor) -> torch.Tensor:
        return groups.square().sum(1)


class GroupLasso(Regularizer):
    r"""Group lasso on each pair's coupling filter (its B basis weights), smoothed:
    :math:`\lambda \sum_e \big(\sqrt{\lVert W_e \rVert^2 + \epsilon^2} - \epsilon\big)`,
    which drops whole filters towards 0. With ε > 0 it is differentiable, for L-BFGS and
    Adam; with ε = 0 it is the exact :math:`\lambda \sum_e \lVert W_e \rVert`, for
    :class:`~spikefit.tasks.solvers.ProximalGradient`, whose proximal step sets whole
    filters to exactly 0 (with ε > 0 that solver treats it as smooth). Its Hessian is not
    diagonal, as Newton's penalty derivatives need, so Newton is refused.

    Args:
        strength: weight λ of the penalty (≥ 0).
        smoothing: ε ≥ 0, the filter norm below which the penalty is quadratic.
    """

    allowed_solvers = (LBFGS, Adam, ProximalGradient)
    refusal = "the group norm couples a pair's weights, and Newton's penalty is per weight"

    def __init__(self, strength: float, smoothing: float = 1e-4) -> None:
        super().__init__(strength)
        self.smoothing = non_negative(f"{type(self).__name__}.smoothing", smoothing)
        self.smooth = self.smoothing > 0

    def cost(self, groups: torch.Tensor) -> torch.Tensor:
        return (groups.square().sum(1) + self.smoothing**2).sqrt() - self.smoothing

    def prox(self, groups: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        """Group soft thresholding: every filter shrunk by τ in norm, and 0 within τ of 0
        (that of the exact norm, ε = 0)."""
        norm = groups.norm(dim=1, keepdim=True)
        return groups * (1 - threshold.view(-1, 1) / norm.clamp(min=1e-30)).clamp(min=0)
