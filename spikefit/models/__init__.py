"""Spiking network models: GLMs, LNPs and synaptic-activation models on PyG graphs."""

from spikefit.models.base_model import BaseModel
from spikefit.models.bernoulli_glm import BernoulliGLM
from spikefit.models.engine import RunawayActivityError, SpikeEvents
from spikefit.models.filter_glm import FilterGLM
from spikefit.models.poisson_glm import PoissonGLM
from spikefit.models.rectified_lnp import RectifiedLNP
from spikefit.models.rectified_sam import RectifiedSAM
from spikefit.models.sa_model import SAModel
from spikefit.models.threshold_sam import ThresholdSAM

__all__ = [
    "BaseModel",
    "BernoulliGLM",
    "FilterGLM",
    "PoissonGLM",
    "RectifiedLNP",
    "RectifiedSAM",
    "RunawayActivityError",
    "SAModel",
    "SpikeEvents",
    "ThresholdSAM",
]
