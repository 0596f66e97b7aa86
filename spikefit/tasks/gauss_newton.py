r"""Damped Gauss–Newton (Levenberg–Marquardt) steps toward the root of noisy residuals."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch


@dataclass
class Linearization:
    """Residuals of the parameters and their first-order model.

    Attributes:
        residuals: [R] residuals e(p) (dimensionless, e.g. relative rate errors).
        jacobian: [R, P] sparse COO (or dense) Jacobian de/dp, columns in the order of the
            optimizer's parameters, each flattened.
        variance: [R] sampling variance of each residual's estimate.
    """

    residuals: torch.Tensor
    jacobian: torch.Tensor
    variance: torch.Tensor


def multiply(matrix: torch.Tensor, vector: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """``matrix @ vector`` (or ``matrix.T @ vector``) for a coalesced sparse COO matrix, from
    its nonzeros only."""
    rows, columns = matrix.indices()
    if transpose:
        rows, columns = columns, rows
    result = torch.zeros(matrix.shape[int(transpose)], dtype=vector.dtype, device=vector.device)
    return result.index_add_(0, rows, matrix.values() * vector[columns])


def column_squares(matrix: torch.Tensor) -> torch.Tensor:
    """Sum of squares of every column of a coalesced sparse COO matrix, from its nonzeros."""
    return torch.zeros(matrix.shape[1], dtype=matrix.dtype, device=matrix.device).index_add_(
        0, matrix.indices()[1], matrix.values().square()
    )


def damped_least_squares(
    jacobian: torch.Tensor,
    residuals: torch.Tensor,
    damping: float,
    scales: torch.Tensor,
    tolerance: float = 1e-10,
    max_iterations: int = 200,
) -> torch.Tensor:
    r"""The damped Gauss–Newton (Levenberg–Marquardt) step

    .. math::
        \delta = \arg\min_\delta \|J\delta + e\|^2 + \lambda \sum_j (\delta_j / s_j)^2,
        \qquad (J^\top J + \lambda S^{-2})\,\delta = -J^\top e,

    damped in relative parameter changes (parameter scales :math:`s_j`): where the targets
    leave directions free (more parameters than targets), it is (for small λ > 0) the
    smallest relative change that corrects e, each parameter moving in proportion to its
    elasticity. (Marquardt's
    :math:`\mathrm{diag}(J^\top J)` would give each parameter an equal share of the
    correction instead, throwing a weakly acting parameter far out.) Solved by conjugate
    gradients preconditioned with the diagonal, in float64, touching J only through products
    with its nonzeros (memory O(nnz), never P × P). Calibration Jacobians are a diagonal
    (per-neuron residuals against per-neuron parameters) plus a few dense rows and columns,
    so CG ends in a few iterations (one for a diagonal J).

    Args:
        jacobian: [R, P] sparse COO (or dense) Jacobian.
        residuals: [R] residuals e.
        damping: λ ≥ 0.
        scales: [P] parameter scales s > 0.
        tolerance: stop when the preconditioned residual norm falls by this factor.
        max_iterations: at most this many CG iterations.

    Returns:
        δ [P] (float64).
    """
    J = jacobian.to_sparse().coalesce().double()
    metric = damping / scales.double().square()
    diagonal = column_squares(J) + metric
    inverse = torch.where(diagonal > 0, 1 / diagonal.clamp(min=1e-300), 0.0)
    step = torch.zeros_like(diagonal)
    remainder = -multiply(J, residuals.double(), transpose=True)
    preconditioned = inverse * remainder
    direction = preconditioned.clone()
    energy = remainder @ preconditioned
    stop = tolerance**2 * energy
    for _ in range(max_iterations):
        if energy <= stop or energy == 0:
            break
        image = multiply(J, multiply(J, direction), transpose=True) + metric * direction
        curving = direction @ image
        if curving <= 0:  # only at the solution of a singular (undamped) system
            break
        length = energy / curving
        step += length * direction
        remainder -= length * image
        preconditioned = inverse * remainder
        energy, previous = remainder @ preconditioned, energy
        direction = preconditioned + (energy / previous) * direction
    return step


def parameter_scales(
    values: torch.Tensor, jacobian: torch.Tensor, residuals: torch.Tensor
) -> torch.Tensor:
    """Scale of every parameter [P]: its magnitude, or, for a parameter at zero, the change
    that alone would correct the residuals (‖e‖ / ‖J column‖), or 1 if none depends on it."""
    columns = column_squares(jacobian.to_sparse().coalesce().double()).sqrt()
    alone = torch.where(columns > 0, residuals.double().norm() / columns.clamp(min=1e-300), 1.0)
    scales = torch.where(values.double() != 0, values.double().abs(), alone)
    return torch.where(scales > 0, scales, 1.0)


class GaussNewton(torch.optim.Optimizer):
    r"""Levenberg–Marquardt steps that drive noisy residuals e(p) to zero.

    ``step(closure)``: the closure returns a :class:`Linearization` (residuals, Jacobian and
    the residuals' sampling variance at the current parameters); the parameters move by
    :math:`s\,\delta` with δ from :func:`damped_least_squares`, damped in changes relative
    to the parameters' scales at the first step (:func:`parameter_scales`), a parameter of n
    values (e.g. one per neuron) by its root-mean-square relative change, so that it weighs
    as much as a scalar. ``damping`` is relative to the curvature of that scaled problem
    (the mean of :math:`\|J_j\|^2 S_j^2` over the columns), so a step is as close to the
    undamped one whatever the units of the residuals and parameters (a parameter starting
    near zero, with a tiny scale, is not pinned there).

    When the Jacobian is only a model of the residuals' response (calibration: the open-loop,
    teacher-forced response, which ignores network feedback; or a surrogate gradient), full
    steps overshoot or fall short. The step scale s corrects for it from what the next step
    measures. With Δe the change of the residuals and Jδ the change the model predicted per
    unit scale, the response :math:`\gamma = \langle \Delta e, J\delta\rangle / (s\,\|J\delta\|^2)`
    is the true response in units of the model's; the step achieved the fraction γs of its
    correction. Where the predicted change stands clearly above the noise (‖sJδ‖² > 16 × the
    summed variances of both residual estimates) and γs is outside [1/2, 3/2] (the error
    would shrink by less than half per step, or oscillate), s becomes 1/γ, the secant
    estimate (at most 4× up or down per step). Where the change is buried in noise, s halves
    only if ‖e‖ grew by more than 3 standard deviations of the noise of both estimates.
    Noise never rescales s; the root of e is the fixed point whatever s is. One parameter
    group.

    Args:
        params: the parameters, in the order of the Jacobian's columns.
        damping: λ, the damping of relative parameter changes, relative to the curvature.
        min_scale: the smallest step scale.
        max_scale: the largest step scale.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        damping: float = 1e-3,
        min_scale: float = 1 / 64,
        max_scale: float = 16.0,
    ) -> None:
        if not damping >= 0 or not 0 < min_scale <= 1 <= max_scale:
            raise ValueError(
                f"GaussNewton: damping must be ≥ 0 and min_scale ≤ 1 ≤ max_scale, "
                f"got {damping}, {min_scale}, {max_scale}"
            )
        super().__init__(params, dict(damping=damping, min_scale=min_scale, max_scale=max_scale))
        if len(self.param_groups) != 1:
            raise ValueError("GaussNewton takes one parameter group")

    @torch.no_grad()
    def step(self, closure: Callable[[], Linearization]) -> Linearization:  # type: ignore[override]
        """One step; returns the closure's linearization (at the parameters before it)."""
        with torch.enable_grad():
            linear = closure()
        group = self.param_groups[0]
        parameters = group["params"]
        state = self.state[parameters[0]]
        residuals = linear.residuals.double()
        noise = float(linear.variance.double().sum())
        scale = state.get("scale", 1.0)
        if state.get("residuals") is not None and state["residuals"].shape == residuals.shape:
            scale = self._adapt(scale, state, residuals, noise, group)
        jacobian = linear.jacobian.to_sparse().coalesce().double()
        if state.get("scales") is None or len(state["scales"]) != jacobian.shape[1]:
            values = torch.cat([p.detach().reshape(-1) for p in parameters])
            sizes = torch.cat(
                [torch.full((p.numel(),), float(p.numel()), device=p.device) for p in parameters]
            )
            state["scales"] = parameter_scales(values, jacobian, residuals) * sizes.sqrt()
        curvature = float((column_squares(jacobian) * state["scales"].square()).mean())
        delta = damped_least_squares(
            jacobian, residuals, group["damping"] * curvature, state["scales"]
        )
        for parameter, change in zip(
            parameters, delta.split([p.numel() for p in parameters]), strict=True
        ):
            parameter.add_(change.view_as(parameter).to(parameter.dtype), alpha=scale)
        state.update(
            scale=scale, residuals=residuals, noise=noise, predicted=multiply(jacobian, delta)
        )
        return linear

    @staticmethod
    def _adapt(
        scale: float, state: dict, residuals: torch.Tensor, noise: float, group: dict
    ) -> float:
        """The step scale after comparing the residuals with the last step's (see above)."""
        # float64 as stored (restoring a checkpoint casts the state to the parameters' dtype)
        previous, predicted = state["residuals"].double(), state["predicted"].double()
        size = float(predicted @ predicted)
        if scale**2 * size > 16 * (noise + state["noise"]):
            response = float((residuals - previous) @ predicted) / (scale * size)
            if 0.5 <= response * scale <= 1.5:
                return scale
            wanted = 1 / response if response > 0 else 0.0
            return min(max(wanted, scale / 4, group["min_scale"]), 4 * scale, group["max_scale"])
        growth = float(residuals.norm() - previous.norm())
        if growth > 3 * math.sqrt(noise + state["noise"]):
            return max(scale / 2, group["min_scale"])
        return scale
