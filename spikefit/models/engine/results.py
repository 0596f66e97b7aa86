"""What a simulation returns: spikes as events, in blocks, or gathered into a raster."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch

from spikefit.checks import InputError


@dataclass
class SpikeEvents:
    """Spikes as events: step index, neuron, trial and count of every nonzero bin."""

    steps: torch.Tensor
    neurons: torch.Tensor
    trials: torch.Tensor
    counts: torch.Tensor
    n_neurons: int
    n_steps: int
    n_trials: int
    dt: float

    def to_raster(self, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
        """Dense raster [N, n_steps] (or [N, n_steps, n_trials])."""
        raster = torch.zeros(
            self.n_neurons, self.n_steps, self.n_trials, dtype=dtype, device=self.steps.device
        )
        raster[self.neurons, self.steps, self.trials] = self.counts.to(dtype)
        return raster.squeeze(2) if self.n_trials == 1 else raster

    def rates_hz(self) -> torch.Tensor:
        """Mean firing rate of every neuron over steps and trials [N], in Hz."""
        total = torch.zeros(self.n_neurons, device=self.steps.device)
        total.index_add_(0, self.neurons, self.counts.float())
        return total / (self.n_steps * self.n_trials) / self.dt * 1000


class SpikeBlock(NamedTuple):
    """The spikes of ``length`` consecutive steps: step in the block, flat index
    trial·N + neuron and count of every nonzero bin."""

    length: int
    steps: torch.Tensor
    flat: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def from_raster(cls, raster: torch.Tensor) -> SpikeBlock:
        """The nonzero bins of a dense block [L, K·N] or [L, K, N]."""
        raster = raster.reshape(raster.shape[0], -1)
        steps, flat = raster.nonzero(as_tuple=True)
        return cls(raster.shape[0], steps, flat, raster[steps, flat])


def largest_count(dtype: torch.dtype) -> int | None:
    """The largest spike count a raster of ``dtype`` holds (None: any)."""
    if dtype == torch.bool:
        return 1
    return None if dtype.is_floating_point else torch.iinfo(dtype).max


def collect(
    blocks: Iterator[SpikeBlock],
    n_neurons: int,
    n_steps: int,
    n_trials: int,
    dtype: torch.dtype,
    as_events: bool,
    dt: float,
) -> torch.Tensor | SpikeEvents:
    """Gathers the blocks' spikes into a raster [N, n_steps(, K)] or SpikeEvents."""
    parts, raster, offset, largest = [], None, 0, largest_count(dtype)
    for block in blocks:
        steps = block.steps + offset
        trials, neurons = block.flat.div(n_neurons, rounding_mode="floor"), block.flat % n_neurons
        offset += block.length
        if as_events:
            parts.append((steps, neurons, trials, block.counts))
            continue
        if raster is None:
            raster = torch.zeros(n_neurons, n_steps, n_trials, dtype=dtype, device=steps.device)
        if largest is not None and len(block.counts) and int(block.counts.max()) > largest:
            raise InputError(
                "store_as_dtype",
                f"{dtype} cannot hold a count of {int(block.counts.max())} spikes in one step",
                "a wider dtype (e.g. torch.int32) or as_events=True",
            )
        raster.view(-1)[(neurons * n_steps + steps) * n_trials + trials] = block.counts.to(dtype)
    if as_events:
        steps, neurons, trials, counts = (torch.cat(column) for column in zip(*parts, strict=True))
        return SpikeEvents(
            steps, neurons, trials, counts.to(torch.int32), n_neurons, n_steps, n_trials, dt
        )
    return raster.squeeze(2) if n_trials == 1 else raster
