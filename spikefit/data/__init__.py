"""Lightning data modules."""

from spikefit.data.networks import NetworkDataModule
from spikefit.data.spike_trains import SpikeTrainDataModule

__all__ = ["NetworkDataModule", "SpikeTrainDataModule"]
