"""Solvers of the rate calibration: each builds its optimizer and takes a step per batch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import nn
from torch_geometric.data import Data

from spikefit.checks import InputError, in_range, non_negative, positive
from spikefit.tasks import gauss_newton
from spikefit.tasks.calibration import safeguarded
from spikefit.tasks.calibration.estimator import flatten
from spikefit.tasks.gauss_newton import Linearization

if TYPE_CHECKING:
    from spikefit.tasks.calibration.task import RateCalibration


class CalibrationSolver:
    """Builds the optimizer of a calibration's tuned parameters and takes one step on a batch
    of networks with the task's estimates."""

    #: What else to try when the calibration loss becomes non-finite.
    remedy = ""

    def build(self, parameters: list[nn.Parameter]) -> OptimizerLRScheduler:
        raise NotImplementedError

    def step(self, task: RateCalibration, batch: Data, batch_idx: int) -> None:
        raise NotImplementedError


class GaussNewton(CalibrationSolver):
    r"""Levenberg–Marquardt steps (:class:`spikefit.tasks.gauss_newton.GaussNewton`) on the
    task's :meth:`~spikefit.tasks.calibration.RateCalibration.linearize`: the residuals
    ρ(e) (:func:`~spikefit.tasks.calibration.log_below_target`), their variances and their
    sparse Jacobian, from trials pooled to the task's precision.

    Args:
        damping: damping λ of relative parameter changes, relative to the curvature (≥ 0).
    """

    def __init__(self, damping: float = 1e-3) -> None:
        self.damping = non_negative(f"{type(self).__name__}.damping", damping)

    def build(self, parameters: list[nn.Parameter]) -> OptimizerLRScheduler:
        return gauss_newton.GaussNewton(parameters, damping=self.damping)

    def step(self, task: RateCalibration, batch: Data, batch_idx: int) -> None:
        task.optimizers().step(closure=lambda: task.linearize(batch, batch_idx))


class SafeguardedNewton(CalibrationSolver):
    r"""Newton steps on every neuron's own value of one per-neuron parameter against
    per-neuron targets alone (a diagonal Jacobian), each within a trust radius of its own
    (:class:`spikefit.tasks.calibration.safeguarded.SafeguardedNewton`): the slope the last
    steps measured, network feedback included, where it stands above the noise, else the
    open-loop Jacobian of the task's
    :meth:`~spikefit.tasks.calibration.RateCalibration.linearize`. For networks whose
    feedback throws Gauss–Newton's steps far (a fitted network that runs away or falls
    silent): a neuron moves at most by its radius, which doubles while it is far from its
    target and halves when it overshoots, and a saturated or silent neuron, whose rate
    does not respond, still moves toward its target.

    Args:
        radius: the largest first change of a neuron's value, in the parameter's units (for
            an offset such as b, 1 changes a logistic or exponential neuron's open-loop rate
            up to e-fold).
    """

    def __init__(self, radius: float = 1.0) -> None:
        self.radius = positive(f"{type(self).__name__}.radius", radius)

    def build(self, parameters: list[nn.Parameter]) -> OptimizerLRScheduler:
        return safeguarded.SafeguardedNewton(parameters, radius=self.radius)

    def step(self, task: RateCalibration, batch: Data, batch_idx: int) -> None:
        def closure() -> Linearization:
            linear = task.linearize(batch, batch_idx)
            n = task.model.get_parameter(task.tuned[0]).numel()
            if len(task.tuned) > 1 or linear.jacobian.shape != (n, n):
                raise InputError(
                    f"{task.owner}.solver",
                    f"{type(self).__name__} steps one parameter with one error per value, "
                    f"not {task.tuned} against {len(linear.residuals)} errors",
                    "one per_neuron parameter tuned to neuron_rates_hz alone, or GaussNewton",
                )
            return linear

        task.optimizers().step(closure=closure)


class Adam(CalibrationSolver):
    """Adam on the mean squared relative error of the task's first ``n_trials`` trials (no
    pooling), its learning rate decaying every step.

    Args:
        lr: learning rate.
        lr_decay: multiplicative learning-rate decay per step, in (0, 1].
    """

    remedy = ", or lower lr"

    def __init__(self, lr: float = 0.05, lr_decay: float = 0.98) -> None:
        owner = type(self).__name__
        self.lr = positive(f"{owner}.lr", lr)
        self.lr_decay = in_range(f"{owner}.lr_decay", lr_decay, 0, 1, low_open=True)

    def build(self, parameters: list[nn.Parameter]) -> OptimizerLRScheduler:
        optimizer = torch.optim.Adam(parameters, lr=self.lr)
        decay = torch.optim.lr_scheduler.ExponentialLR(optimizer, self.lr_decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": decay, "interval": "step"}}

    def step(self, task: RateCalibration, batch: Data, batch_idx: int) -> None:
        optimizer = task.optimizers()
        targets, trial_errors = task.trial_errors(batch, batch_idx, task.hparams.n_trials, draw=0)
        errors = task.errors(targets, task.check_finite(flatten(trial_errors)))
        loss = torch.stack([(e.mean(dim=0) ** 2).mean() for e in trial_errors]).mean()
        optimizer.zero_grad()
        task.manual_backward(loss)
        optimizer.step()
        task.lr_schedulers().step()
        task.record(targets, errors)
