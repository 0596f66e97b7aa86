r"""Simulation loops: the fast separable engine and the reference per-step path.

Every loop is a generator of raster blocks [L, K, N] (steps, trials, neurons) for the recorded
steps, so a caller can keep a dense raster, spike times, or stream to disk.

The fast engine for spike-history models keeps a buffer ``future`` of the input that spikes
already emitted will deliver to the next T steps. A step then costs one read of the current
input, one emission, one sparse propagation of the spikes along their outgoing edges and one
O(N·T) update:

.. math::
    F(t+1+\tau) \mathrel{+}= r\,c(\tau) \sum_j (W_0)_{ji} X_j(t) + \mathrm{ref}_i(\tau) X_i(t)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch_geometric.data import Data
from tqdm.auto import tqdm

from spikefit.models.coupling import SpikePropagator

#: Largest number of (step, trial, neuron) values in one block buffer.
BLOCK_ELEMENTS = 1 << 22
#: A neuron emitting more spikes than this in one step means the activity ran away.
MAX_COUNT_PER_STEP = 1000


class RunawayActivityError(RuntimeError):
    """Raised when simulated activity explodes (non-finite input or absurd spike counts)."""


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
        raster = torch.zeros(self.n_neurons, self.n_steps, self.n_trials, dtype=dtype,
                             device=self.steps.device)
        raster[self.neurons, self.steps, self.trials] = self.counts.to(dtype)
        return raster.squeeze(2) if self.n_trials == 1 else raster

    def rates_hz(self) -> torch.Tensor:
        """Mean firing rate of every neuron over steps and trials [N], in Hz."""
        total = torch.zeros(self.n_neurons, device=self.steps.device)
        total.index_add_(0, self.neurons, self.counts.float())
        return total / (self.n_steps * self.n_trials) / self.dt * 1000


class ExponentialPool:
    """Exp(1) draws handed out in slices, refilled in bulk (one generator call per refill)."""

    def __init__(self, size: int, generator: torch.Generator, device: torch.device) -> None:
        self.pool = torch.empty(size, device=device)
        self.generator = generator
        self.position = size

    def take(self, count: int) -> torch.Tensor:
        if self.position + count > len(self.pool):
            self.pool.exponential_(generator=self.generator)
            self.position = 0
        self.position += count
        return self.pool[self.position - count:self.position]


def collect(blocks: Iterator[torch.Tensor], n_neurons: int, n_steps: int, n_trials: int,
            dtype: torch.dtype, as_events: bool, dt: float) -> torch.Tensor | SpikeEvents:
    """Gathers raster blocks [L, K, N] into a raster [N, n_steps(, K)] or SpikeEvents."""
    if as_events:
        parts, offset = [], 0
        for block in blocks:
            step, trial, neuron = block.nonzero(as_tuple=True)
            parts.append((step + offset, neuron, trial, block[step, trial, neuron]))
            offset += block.shape[0]
        steps, neurons, trials, counts = (torch.cat(column) for column in zip(*parts, strict=True))
        return SpikeEvents(steps, neurons, trials, counts.to(torch.int32), n_neurons, n_steps,
                           n_trials, dt)
    raster, offset = None, 0
    for block in blocks:
        if raster is None:
            raster = torch.empty(n_neurons, n_steps, n_trials, dtype=dtype, device=block.device)
        raster[:, offset:offset + block.shape[0]] = block.permute(2, 0, 1)
        offset += block.shape[0]
    return raster.squeeze(2) if n_trials == 1 else raster


def _segments(equilibration_steps: int, n_steps: int, block: int) -> Iterator[tuple[int, int]]:
    """(start, length) of the blocks: equilibration (t < 0) first, then the recorded steps."""
    for begin, end in ((-equilibration_steps, 0), (0, n_steps)):
        for start in range(begin, end, block):
            yield start, min(block, end - start)


def _block_length(width: int) -> int:
    """Steps per block for ``width`` neuron-trials, so one block buffer stays bounded."""
    return max(1, min(1024, BLOCK_ELEMENTS // width))


def _drive(model, times: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Background plus stimulus input for the steps ``times`` as [L, K|1, N]."""
    stimulus = model.stimulus_block(times, shape[2]).unsqueeze(1)
    return stimulus + model.background_input(shape)


def _check(block: torch.Tensor, latest_input: torch.Tensor, start: int) -> None:
    if not torch.isfinite(latest_input).all() or block.max() > MAX_COUNT_PER_STEP:
        raise RunawayActivityError(
            f"activity exploded in the steps from {start} on (non-finite input or more than "
            f"{MAX_COUNT_PER_STEP} spikes per neuron per step): lower r, b or the stimulus")


def history_blocks(model, data: Data, n_steps: int, generator: torch.Generator, n_trials: int,
                   equilibration_steps: int, verbose: bool) -> Iterator[torch.Tensor]:
    """Fast engine for spike-history (GLM/LNP) models with separable kernels.

    The yielded block is a reused buffer: consume it before asking for the next one."""
    n, device = data.num_nodes, data.W0.device
    width, window = n_trials * n, model.window
    propagate = SpikePropagator(data.edge_index, data.W0.float(), n, n_trials)
    coupling = (model.recurrence() * model.coupling_kernel()).view(window, 1)
    support = int(coupling.nonzero()[:, 0].max()) + 1 if coupling.any() else 0
    coupling = coupling[:support]
    ref = model.self_kernel()
    if ref is not None:
        ref = ref.t().repeat(1, n_trials) if ref.dim() == 2 else ref.view(window, 1)
    block = _block_length(width)
    future = torch.zeros(block + window, width, device=device)

    def deliver(step: int, active: torch.Tensor, counts: torch.Tensor | None) -> None:
        if support:
            future[step + 1:step + 1 + support].addcmul_(coupling, propagate(active, counts))
        if ref is not None:
            if ref.shape[1] > 1:
                source = ref.index_select(1, active)
            else:
                source = ref.expand(-1, len(active))
            if counts is not None:
                source = source * counts
            future[step + 1:step + 1 + window].index_add_(1, active, source)

    initial = torch.randint(0, 2, (width,), generator=generator, device=device)
    deliver(-1, initial.nonzero().squeeze(1), None)
    rescaled = model.hazard is not None
    if rescaled:  # hazard each neuron must still accumulate before it fires (Exp(1) draws)
        draws = ExponentialPool(max(width, 4096), generator, device)
        remaining = draws.take(width).clone()
    bar = tqdm(total=equilibration_steps + n_steps, disable=not verbose, desc="simulating")
    raster = None
    for start, length in _segments(equilibration_steps, n_steps, block):
        times = torch.arange(start, start + length, device=device)
        future[:length] += _drive(model, times, (length, n_trials, n)).expand(
            length, n_trials, n).reshape(length, width)
        if raster is None:
            raster = torch.empty(block, width, device=device,
                                 dtype=torch.bool if rescaled else torch.float32)
        for step in range(length):
            if rescaled:
                remaining -= model.hazard(future[step])
                active = torch.le(remaining, 0, out=raster[step]).nonzero().squeeze(1)
                remaining.index_copy_(0, active, draws.take(len(active)))
                deliver(step, active, None)
            else:
                counts = model.emit_spikes(model.non_linearity(future[step]))
                raster[step] = counts
                active = counts.nonzero().squeeze(1)
                deliver(step, active, counts[active])
        _check(raster[:length], future[length - 1], start)
        future[:window] = future[length:length + window].clone()
        future[window:] = 0
        bar.update(length)
        if start >= 0:
            yield raster[:length].view(length, n_trials, n)
    bar.close()


def activation_blocks(model, data: Data, n_steps: int, generator: torch.Generator,
                      n_trials: int, equilibration_steps: int,
                      verbose: bool) -> Iterator[torch.Tensor]:
    r"""Engine for synaptic-activation models: :math:`g = r W_0^\top s + b + E`, then s
    is updated by the model's :meth:`update_activation`."""
    n, device = data.num_nodes, data.W0.device
    post_by_pre = torch.sparse_coo_tensor(data.edge_index.flip(0), data.W0.float(),
                                          (n, n)).coalesce().to_sparse_csr()
    r = model.recurrence()
    block = _block_length(n_trials * n)
    activation = torch.rand(n_trials, n, generator=generator, device=device)
    bar = tqdm(total=equilibration_steps + n_steps, disable=not verbose, desc="simulating")
    for start, length in _segments(equilibration_steps, n_steps, block):
        times = torch.arange(start, start + length, device=device)
        drive = _drive(model, times, (length, n_trials, n)).expand(length, n_trials, n)
        raster = torch.empty(length, n_trials, n, device=device)
        for step in range(length):
            g = r * (post_by_pre @ activation.t()).t() + drive[step]
            raster[step] = model.emit_spikes(model.non_linearity(g))
            activation = model.update_activation(raster[step], activation)
        _check(raster, activation, start)
        bar.update(length)
        if start >= 0:
            yield raster
    bar.close()


def reference_history_blocks(model, data: Data, n_steps: int, generator: torch.Generator,
                             n_trials: int, equilibration_steps: int,
                             verbose: bool) -> Iterator[torch.Tensor]:
    """The seed simulator's per-step path: ``forward`` on the state window [N, T]."""
    n, device = data.num_nodes, data.W0.device
    W, edge_index = model.connectivity_filter(data.W0.float(), data.edge_index, n)
    window = W.shape[1]
    total = equilibration_steps + n_steps
    raster = torch.zeros(n_steps, n_trials, n, device=device)
    for trial in tqdm(range(n_trials), disable=not verbose, desc="simulating"):
        state = torch.zeros(n, window + total, device=device)
        state[:, window - 1] = torch.randint(0, 2, (n,), generator=generator, device=device)
        for t in range(window, window + total):
            time = t - window - equilibration_steps
            state[:, t] = model(edge_index, W, state[:, t - window:t], t=time)
        raster[:, trial] = state[:, window + equilibration_steps:].t()
    yield raster


def reference_activation_blocks(model, data: Data, n_steps: int, generator: torch.Generator,
                                n_trials: int, equilibration_steps: int,
                                verbose: bool) -> Iterator[torch.Tensor]:
    """The seed simulator's per-step path for synaptic-activation models."""
    n, device = data.num_nodes, data.W0.device
    W, edge_index = model.connectivity_filter(data.W0.float(), data.edge_index, n)
    raster = torch.zeros(n_steps, n_trials, n, device=device)
    for trial in tqdm(range(n_trials), disable=not verbose, desc="simulating"):
        activation = torch.rand(n, 1, generator=generator, device=device)
        for time in range(-equilibration_steps, n_steps):
            spikes = model(edge_index, W, activation, t=time).float()
            activation = model.update_activation(spikes.unsqueeze(1), activation)
            if time >= 0:
                raster[time, trial] = spikes
    yield raster
