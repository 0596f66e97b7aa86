"""The package's default model: the seed introduction's BernoulliGLM."""

from jsonargparse import lazy_instance

from spikefit.models import BernoulliGLM
from spikefit.models.bernoulli_glm import SEED_INTRODUCTION

__all__ = ["DEFAULT_MODEL", "SEED_INTRODUCTION", "own_model"]

#: The default model of the tasks and the CLI: the seed introduction's BernoulliGLM.
DEFAULT_MODEL = lazy_instance(BernoulliGLM, **SEED_INTRODUCTION)


def own_model(model: BernoulliGLM) -> BernoulliGLM:
    """``model``, or a fresh seed-introduction BernoulliGLM where it is the shared default
    (so that a task tuning or fitting its model never changes the default)."""
    return BernoulliGLM(**SEED_INTRODUCTION) if model is DEFAULT_MODEL else model
