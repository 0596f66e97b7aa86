from spikefit.stimulus.base_stimulus import BaseStimulus
from spikefit.stimulus.loaded_stimulus import LoadedStimulus
from spikefit.stimulus.poisson_stimulus import PoissonStimulus
from spikefit.stimulus.regular_stimulus import RegularStimulus
from spikefit.stimulus.sin_stimulus import SinStimulus

__all__ = [
    "BaseStimulus",
    "RegularStimulus",
    "PoissonStimulus",
    "SinStimulus",
    "LoadedStimulus",
]
