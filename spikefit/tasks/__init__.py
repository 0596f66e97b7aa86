"""Lightning tasks: calibration (and, later, likelihood fits)."""

from spikefit.tasks.calibration import RateCalibration

__all__ = ["RateCalibration"]
