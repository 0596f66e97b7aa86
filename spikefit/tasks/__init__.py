"""Lightning tasks: calibration and likelihood fits, with the pieces of the latter."""

from spikefit.tasks.calibration import RateCalibration
from spikefit.tasks.likelihood import LikelihoodFit
from spikefit.tasks.observation import BernoulliObservations, Observations, PoissonObservations
from spikefit.tasks.regularizers import L1, L2, Regularizer
from spikefit.tasks.solvers import LBFGS, Adam, Newton, Solver

__all__ = ["RateCalibration", "LikelihoodFit", "Observations", "BernoulliObservations",
           "PoissonObservations", "Regularizer", "L1", "L2", "Solver", "Adam", "LBFGS", "Newton"]
