"""spikefit: simulate and fit networks of stochastic spiking neurons.

The Lightning tasks and data modules are imported on first use (``spikefit.RateCalibration``
loads Lightning; ``import spikefit`` alone does not).
"""

from importlib import import_module

from spikefit import datasets, io, models, stimulus
from spikefit.checks import InputError

#: Names served lazily, by the module that defines them.
_LAZY = {
    "RateCalibration": "spikefit.tasks",
    "LikelihoodFit": "spikefit.tasks",
    "NetworkDataModule": "spikefit.data",
    "SpikeTrainDataModule": "spikefit.data",
}

__all__ = ["InputError", "datasets", "io", "models", "stimulus", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'spikefit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
