"""Maximum-likelihood fits: the task, its parameters, objective, Newton system and metrics."""

from spikefit.tasks.likelihood.task import LikelihoodFit

__all__ = ["LikelihoodFit"]
