"""The calibration's estimator: relative rate errors pooled over trials, their variances and
the precision a step asks of them."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from spikefit.tasks.gauss_newton import Linearization
from spikefit.tasks.targets import RateTarget

#: ``reduce(tensor, reduce_op="mean")``: the mean over processes (a Lightning strategy's).
Reduce = Callable[..., torch.Tensor]


@dataclass
class Errors:
    """Relative errors of one estimate, averaged over trials (and processes).

    Attributes:
        residuals: [R] every target's relative errors, flattened (a per-neuron target: N).
        variance: [R] their sampling variances.
        judged: [J] the errors convergence judges (:func:`judged_errors`): every target's
            error of the mean rate, then, where each neuron is judged, every neuron's own
            error of the per-neuron targets.
        judged_variance: [J] their sampling variances.
        trials: trials per process behind the estimate.
        prior: the variance of one trial's value of each judged error [J] and its weight
            (degrees of freedom), carried to the next step.
    """

    residuals: torch.Tensor
    variance: torch.Tensor
    judged: torch.Tensor
    judged_variance: torch.Tensor
    trials: int
    prior: tuple[torch.Tensor, float]


def flatten(trial_errors: list[torch.Tensor]) -> torch.Tensor:
    """Per-trial errors of every target, [K] or [K, N] each, as one detached [K, R]."""
    return torch.cat([error.detach().reshape(error.shape[0], -1) for error in trial_errors], 1)


def judged_errors(
    targets: list[RateTarget], trial_errors: torch.Tensor, each_neuron: bool
) -> torch.Tensor:
    """The errors convergence judges [K, J] from per-trial errors [K, R] (flattened
    ``targets``): every target's error of the mean rate, then, with ``each_neuron``, every
    neuron's own error of the per-neuron targets."""
    parts = trial_errors.split([target.rate_hz.numel() for target in targets], dim=1)
    means = [
        target.error_of_mean(part.squeeze(1) if target.rate_hz.dim() == 0 else part)
        for target, part in zip(targets, parts, strict=True)
    ]
    neurons = [
        part for target, part in zip(targets, parts, strict=True) if target.rate_hz.dim() == 1
    ]
    return torch.cat([torch.stack(means, 1), *(neurons if each_neuron else [])], 1)


def judged_tolerances(
    targets: list[RateTarget], tolerance: float, neuron_tolerance: float | None
) -> torch.Tensor:
    """The tolerance [J] of every error of :func:`judged_errors`, each neuron judged where
    ``neuron_tolerance`` is given: ``tolerance`` for the means, ``neuron_tolerance`` for
    every neuron's own error."""
    tolerances = [torch.full((len(targets),), tolerance)]
    if neuron_tolerance is not None:
        tolerances += [
            torch.full((target.rate_hz.numel(),), neuron_tolerance)
            for target in targets
            if target.rate_hz.dim() == 1
        ]
    return torch.cat(tolerances).to(targets[0].rate_hz.device)


def pool(
    targets: list[RateTarget],
    trial_errors: torch.Tensor,
    prior: tuple[torch.Tensor, float] | None,
    world: int,
    reduce: Reduce,
    each_neuron: bool = False,
) -> Errors:
    """Means and sampling variances of per-trial errors [K, R] (flattened ``targets``),
    averaged over the ``world`` processes (each simulates its own networks and trials), and
    of the errors convergence judges (:func:`judged_errors`, every neuron's own with
    ``each_neuron``).

    The variance of one trial's value of each judged error is pooled with the ``prior`` of
    the last steps near the target (half its weight per step), so that a step of a few
    trials does not judge its precision from a few degrees of freedom. (Steps far from the
    target do not count: the variance changes with the rate.)"""
    trials = trial_errors.shape[0]
    per_target = judged_errors(targets, trial_errors, each_neuron)

    def spread(values: torch.Tensor) -> torch.Tensor:  # variance of one trial's values
        if trials == 1:
            return torch.full_like(values[0], math.inf)
        return reduce(values.var(dim=0), reduce_op="mean")

    degrees = (trials - 1) * world
    single = spread(per_target)
    if prior is not None and prior[1] > 0:
        variance, weight = prior
        single = (weight * variance + degrees * single.nan_to_num(posinf=0.0)) / (weight + degrees)
        degrees += weight
    return Errors(
        reduce(trial_errors.mean(dim=0), reduce_op="mean"),
        spread(trial_errors) / (trials * world),
        reduce(per_target.mean(dim=0), reduce_op="mean"),
        single / (trials * world),
        trials,
        (single, degrees / 2),
    )


def all_within_tolerance(errors: Errors, tolerance: float | torch.Tensor) -> bool:
    """Whether every judged error is within its ``tolerance`` (one for all, or [J])."""
    return bool((errors.judged.abs() <= tolerance).all())


def precision_ratio(errors: Errors, tolerance: float | torch.Tensor, precision: float) -> float:
    """Largest ratio of a judged error's variance to the one asked for (≤ 1: precise
    enough): a standard error of ``precision × tolerance`` (its own tolerance, of one for
    all or [J]) once every error is within its tolerance (the step validation follows),
    before that of a third of each error (the step surely points the right way and
    removes most of the error), or that if larger."""
    floor = precision * torch.as_tensor(tolerance, device=errors.judged.device)
    if not all_within_tolerance(errors, tolerance):
        wanted = torch.maximum(errors.judged.abs() / 3, floor)
        return float((errors.judged_variance / wanted**2).max())
    return float((errors.judged_variance / floor**2).max())


def more_trials(ratio: float, pooled: int, max_trials: int) -> int:
    """Trials to add to the ``pooled`` ones for the :func:`precision_ratio` ``ratio`` to
    reach 1 (10% to spare), at most 3× those pooled and ``max_trials`` in all."""
    needed = math.ceil(1.1 * pooled * ratio) if math.isfinite(ratio) else 2 * pooled
    return min(max(needed - pooled, 1), 3 * pooled, max_trials - pooled)


def log_below_target(linear: Linearization, floor: float = 1e-3) -> Linearization:
    r"""The linearization of :math:`\rho(e) = \log(1 + e)` for rates below their target
    (e < 0) and of e itself above, from one of the relative errors e.

    Rates respond to an input offset (θ, b) between linearly (rectified links) and
    exponentially (exponential and logistic links, below saturation). A Newton step on the
    rate ratio itself overshoots an exponential response from below (theta 5 → 10 Hz: +8.6%
    after the first step) and one on its logarithm overshoots a linear response from above
    (a rectified network driven past zero goes silent, with no gradient left). ρ takes the
    logarithm below the target and the ratio above: each step is exact for one of the two
    responses and falls short for the other, never overshooting for any response in between
    (ρ and its slope are continuous at the target, so near it nothing changes). Rows of J
    and the standard errors are divided by 1 + e where e < 0 (1 + e floored at ``floor``).
    """
    ratio = 1 + linear.residuals
    below = ratio < 1
    slope = torch.where(below, 1 / ratio.clamp(min=floor), torch.ones_like(ratio))
    residuals = torch.where(below, ratio.clamp(min=floor).log(), linear.residuals)
    jacobian = linear.jacobian.to_sparse().coalesce()  # (dense when reduced over processes)
    rows = slope[jacobian.indices()[0]].to(jacobian.dtype)
    jacobian = torch.sparse_coo_tensor(
        jacobian.indices(), jacobian.values() * rows, jacobian.shape, check_invariants=True
    )
    return Linearization(residuals, jacobian, linear.variance * slope.square())
