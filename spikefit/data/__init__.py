"""Lightning data modules."""

from spikefit.data.networks import NetworkDataModule

__all__ = ["NetworkDataModule"]
