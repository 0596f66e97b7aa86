"""Lightning tasks: calibration and likelihood fits, with the pieces of the latter (the
emissions that give the likelihood are the models' own, :mod:`spikefit.models.emissions`)."""

from spikefit.tasks.calibration import RateCalibration
from spikefit.tasks.likelihood import LikelihoodFit
from spikefit.tasks.regularizers import L1, L2, GroupLasso, Regularizer
from spikefit.tasks.solvers import LBFGS, Adam, Newton, NewtonCG, ProximalGradient, Solver

__all__ = [
    "RateCalibration",
    "LikelihoodFit",
    "Regularizer",
    "GroupLasso",
    "L1",
    "L2",
    "Solver",
    "Adam",
    "LBFGS",
    "Newton",
    "NewtonCG",
    "ProximalGradient",
]
