"""The simulation engine: result types, the buffer of coming inputs, steppers and loops."""

from spikefit.models.engine.loops import (
    RunawayActivityError,
    activation_blocks,
    history_blocks,
    reference_activation_blocks,
    reference_history_blocks,
)
from spikefit.models.engine.results import SpikeBlock, SpikeEvents, collect

__all__ = [
    "RunawayActivityError",
    "SpikeBlock",
    "SpikeEvents",
    "activation_blocks",
    "collect",
    "history_blocks",
    "reference_activation_blocks",
    "reference_history_blocks",
]
