"""Firing-rate calibration: the task, its estimator, Jacobian and solvers."""

from spikefit.tasks.calibration.estimator import Errors, flatten, log_below_target
from spikefit.tasks.calibration.jacobian import jacobian_vector, sparse_jacobian, vector_jacobian
from spikefit.tasks.calibration.solvers import (
    Adam,
    CalibrationSolver,
    GaussNewton,
    SafeguardedNewton,
)
from spikefit.tasks.calibration.task import RateCalibration
from spikefit.tasks.defaults import DEFAULT_MODEL, SEED_INTRODUCTION

__all__ = [
    "RateCalibration",
    "CalibrationSolver",
    "GaussNewton",
    "SafeguardedNewton",
    "Adam",
    "Errors",
    "flatten",
    "log_below_target",
    "sparse_jacobian",
    "vector_jacobian",
    "jacobian_vector",
    "DEFAULT_MODEL",
    "SEED_INTRODUCTION",
]
