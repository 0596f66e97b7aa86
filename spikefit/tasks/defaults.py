"""The package's default model: the seed introduction's BernoulliGLM."""

from jsonargparse import lazy_instance

from spikefit.models import BernoulliGLM

#: The seed introduction's BernoulliGLM parameters.
SEED_INTRODUCTION = dict(
    alpha=0.2,
    beta=0.5,
    abs_ref_scale=3,
    rel_ref_scale=7,
    abs_ref_strength=-100,
    rel_ref_strength=-30,
    coupling_window=5,
    theta=5,
    r=1,
    dt=1,
)
#: The default model of the tasks and the CLI: the seed introduction's BernoulliGLM.
DEFAULT_MODEL = lazy_instance(BernoulliGLM, **SEED_INTRODUCTION)


def own_model(model: BernoulliGLM) -> BernoulliGLM:
    """``model``, or a fresh seed-introduction BernoulliGLM where it is the shared default
    (so that a task tuning or fitting its model never changes the default)."""
    return BernoulliGLM(**SEED_INTRODUCTION) if model is DEFAULT_MODEL else model
