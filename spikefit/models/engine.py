r"""Simulation loops: the fast separable engine and the reference per-step path.

Every loop is a generator of :class:`SpikeBlock`\ s, the spikes of consecutive blocks of the
recorded steps, so a caller can keep a dense raster, spike times, or stream to disk.

The fast engine for spike-history models keeps a buffer ``future`` of the input that spikes
already emitted will deliver to the next T steps. A step then costs one read of the current
input, one emission, one sparse propagation of the spikes along their outgoing edges and one
O(N·T) update:

.. math::
    F(t+1+\tau) \mathrel{+}= r\,c(\tau) \sum_j (W_0)_{ji} X_j(t) + \mathrm{ref}_i(\tau) X_i(t)

For the Bernoulli GLM on the CPU the steps of a block run in the compiled loop of
:mod:`spikefit.models.native`, which draws the same random numbers in the same order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch_geometric.data import Data
from tqdm.auto import tqdm

from spikefit.checks import InputError
from spikefit.models.coupling import SpikePropagator
from spikefit.models.native import logistic_kernel

#: Largest number of (step, trial, neuron) values in one block buffer.
BLOCK_ELEMENTS = 1 << 22
#: A neuron emitting more spikes than this in one step means the activity ran away (at
#: Δt = 1 ms, 255 kHz; the most a uint8 raster, the default, holds).
MAX_COUNT_PER_STEP = 255


class RunawayActivityError(InputError):
    """Raised when simulated activity explodes (non-finite input or absurd spike counts),
    naming the model's recurrence scale r as the parameter to lower."""


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


class ExponentialPools:
    """Exp(1) draws of every trial from the trial's own generator, handed out in order and
    refilled in bulk (one generator call per refill), so that trials can run independently.

    Args:
        size: draws per trial held at once.
        generator: the run's generator; trial 0 draws from it, trial k > 0 from a generator
            seeded from it.
        n_trials: number of trials K.
    """

    def __init__(self, size: int, generator: torch.Generator, n_trials: int) -> None:
        device = generator.device
        seeds = torch.randint(2**62, (n_trials - 1,), generator=generator, device=device)
        self.generators = [generator] + [torch.Generator(device).manual_seed(seed)
                                         for seed in seeds.tolist()]
        self.pools = torch.empty(n_trials, size, device=device)
        self.positions = [size] * n_trials

    def take(self, trials: torch.Tensor) -> torch.Tensor:
        """The next draw of trial ``trials[m]`` for every m (``trials`` sorted)."""
        if len(self.generators) == 1:
            counts = [len(trials)]
        else:
            counts = torch.bincount(trials, minlength=len(self.generators)).tolist()
        first, start = [], 0  # first[k]: pool position minus trial k's first entry
        for k, count in enumerate(counts):
            if self.positions[k] + count > self.pools.shape[1]:
                self.pools[k].exponential_(generator=self.generators[k])
                self.positions[k] = 0
            first.append(self.positions[k] - start)
            self.positions[k] += count
            start += count
        if len(first) == 1:
            return self.pools[0, first[0]:first[0] + start]
        index = torch.tensor(first, device=trials.device)[trials]
        return self.pools[trials, index + torch.arange(start, device=trials.device)]


def collect(blocks: Iterator[SpikeBlock], n_neurons: int, n_steps: int, n_trials: int,
            dtype: torch.dtype, as_events: bool, dt: float) -> torch.Tensor | SpikeEvents:
    """Gathers the blocks' spikes into a raster [N, n_steps(, K)] or SpikeEvents."""
    parts, raster, offset = [], None, 0
    for block in blocks:
        steps = block.steps + offset
        trials, neurons = block.flat.div(n_neurons, rounding_mode="floor"), block.flat % n_neurons
        offset += block.length
        if as_events:
            parts.append((steps, neurons, trials, block.counts))
            continue
        if raster is None:
            raster = torch.zeros(n_neurons, n_steps, n_trials, dtype=dtype, device=steps.device)
            largest = 1 if dtype == torch.bool else (
                torch.iinfo(dtype).max if not dtype.is_floating_point else None)
        if largest is not None and len(block.counts) and int(block.counts.max()) > largest:
            raise InputError("store_as_dtype", f"{dtype} cannot hold a count of "
                             f"{int(block.counts.max())} spikes in one step",
                             "a wider dtype (e.g. torch.int32) or as_events=True")
        raster.view(-1)[(neurons * n_steps + steps) * n_trials + trials] = block.counts.to(dtype)
    if as_events:
        steps, neurons, trials, counts = (torch.cat(column) for column in zip(*parts, strict=True))
        return SpikeEvents(steps, neurons, trials, counts.to(torch.int32), n_neurons, n_steps,
                           n_trials, dt)
    return raster.squeeze(2) if n_trials == 1 else raster


def _segments(equilibration_steps: int, n_steps: int, block: int) -> Iterator[tuple[int, int]]:
    """(start, length) of the blocks: equilibration (t < 0) first, then the recorded steps."""
    for begin, end in ((-equilibration_steps, 0), (0, n_steps)):
        for start in range(begin, end, block):
            yield start, min(block, end - start)


def _block_length(width: int, longest: int) -> int:
    """Steps per block for ``width`` neuron-trials, so one block buffer stays bounded (and no
    longer than the ``longest`` segment needs)."""
    return max(1, min(1024, longest, BLOCK_ELEMENTS // width))


def _drive(model, times: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Background plus stimulus input for the steps ``times``, broadcastable to [L, K, N]."""
    drive = model.background_input(shape)
    if model.stimulus is None:
        return drive
    return drive + model.stimulus_block(times, shape[2]).unsqueeze(1)


def _check(model, spikes: SpikeBlock, latest: torch.Tensor, start: int) -> None:
    """Raises if ``latest`` (input or hazard state) is non-finite or a count is absurd."""
    if (not torch.isfinite(latest).all()
            or len(spikes.counts) and spikes.counts.max() > MAX_COUNT_PER_STEP):
        raise RunawayActivityError(
            f"{type(model).__name__}.r", f"runaway activity: the rates exploded "
            f"{'during equilibration' if start < 0 else f'from step {start} on'} (non-finite "
            f"input or more than {MAX_COUNT_PER_STEP} spikes per neuron per step)",
            "a stable network: lower r, b or the stimulus strength")


def _compiled_loop(model, device: torch.device) -> tuple[Callable, torch.Tensor, float] | None:
    """The compiled block loop with the model's θ and Δt, when the model's hazard is the
    logistic one the loop evaluates and the run is on the CPU; else ``None``."""
    link = getattr(model, "logistic_hazard", None)
    link = link() if link is not None else None
    if link is None or device.type != "cpu":
        return None
    kernel = logistic_kernel()
    return None if kernel is None else (kernel, *link)


def history_blocks(model, data: Data, n_steps: int, generator: torch.Generator, n_trials: int,
                   equilibration_steps: int, verbose: bool) -> Iterator[SpikeBlock]:
    """Fast engine for spike-history (GLM/LNP) models with separable kernels.

    Models with a ``hazard`` are sampled by time rescaling: a neuron fires when the hazard it
    accumulated since its last spike passes an Exp(1) draw, each trial drawing from its own
    stream (:class:`ExponentialPools`). The Bernoulli GLM's steps run in the compiled loop on
    the CPU, other models' in Python, one step at a time."""
    n, device = data.num_nodes, data.W0.device
    width, window = n_trials * n, model.window
    r, weight = model.recurrence(), data.W0.float()
    if r.dim():  # one r per neuron scales its incoming edges (a scalar r, the kernel)
        weight, r = weight * model.edge_recurrence(data.edge_index).view(-1), 1.0
    propagate = SpikePropagator(data.edge_index, weight, n, n_trials)
    coupling = (r * model.coupling_kernel()).view(window, 1)
    support = int(coupling.nonzero()[:, 0].max()) + 1 if coupling.any() else 0
    coupling = coupling[:support]
    own = model.self_kernel()  # [T, N] or [T, 1]
    if own is not None:
        own = (own.t() if own.dim() == 2 else own.view(window, 1)).contiguous()
        ref = own.repeat(1, n_trials) if own.shape[1] > 1 else own
    block = _block_length(width, max(equilibration_steps, n_steps))
    future = torch.zeros(block + window, width, device=device)

    def deliver(step: int, active: torch.Tensor, counts: torch.Tensor | None) -> None:
        if support:
            future[step + 1:step + 1 + support].addcmul_(coupling, propagate(active, counts))
        if own is not None:
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
        draws = ExponentialPools(max(n, 4096), generator, n_trials)
        trial_of = torch.arange(width, device=device) // n
        remaining = draws.take(trial_of).clone()
    compiled = _compiled_loop(model, device) if rescaled else None
    if compiled is not None:
        kernel, theta, dt = compiled
        run = functools.partial(
            kernel, propagate.targets, propagate.weights, coupling.view(-1).contiguous(),
            torch.zeros(0, 1) if own is None else own, theta.float().expand(n).contiguous(),
            dt, draws.generators, draws.pools, future, remaining)
    else:
        raster = torch.empty(block, width, device=device,
                             dtype=torch.bool if rescaled else torch.float32)
        inputs = future.view(-1, n_trials, n)
    bar = tqdm(total=equilibration_steps + n_steps, disable=not verbose, desc="simulating")
    for start, length in _segments(equilibration_steps, n_steps, block):
        drive = _drive(model, torch.arange(start, start + length, device=device),
                       (length, n_trials, n))
        if drive.dim() or float(drive):
            future[:length].view(length, n_trials, n).add_(drive)
        if compiled is not None:  # reads and zeroes future[:length]
            positions = torch.tensor(draws.positions)
            keys = run(positions, length)
            draws.positions = positions.tolist()
            spikes = SpikeBlock(length, keys // width, keys % width,
                                torch.ones(len(keys), dtype=torch.bool))
        else:
            for step in range(length):  # inputs [K, N]: per-neuron parameters broadcast
                if rescaled:
                    remaining.view(n_trials, n).sub_(model.hazard(inputs[step]))
                    active = torch.le(remaining, 0, out=raster[step]).nonzero().squeeze(1)
                    remaining.index_copy_(0, active, draws.take(trial_of[active]))
                    deliver(step, active, None)
                else:
                    counts = model.emit_spikes(model.non_linearity(inputs[step])).view(-1)
                    raster[step] = counts
                    active = counts.nonzero().squeeze(1)
                    deliver(step, active, counts[active])
            spikes = SpikeBlock.from_raster(raster[:length])
        _check(model, spikes, remaining if rescaled else future[length - 1], start)
        if compiled is None:
            future[:length] = 0
        pending = future[length:length + window].clone()
        future[length:length + window] = 0
        future[:window] = pending
        bar.update(length)
        if start >= 0:
            yield spikes
    bar.close()


def activation_blocks(model, data: Data, n_steps: int, generator: torch.Generator,
                      n_trials: int, equilibration_steps: int,
                      verbose: bool) -> Iterator[SpikeBlock]:
    r"""Engine for synaptic-activation models: :math:`g = r W_0^\top s + b + E`, then s
    is updated by the model's :meth:`update_activation`."""
    n, device = data.num_nodes, data.W0.device
    pre, post = data.edge_index
    weight = data.W0.float()
    r = model.recurrence()
    block = _block_length(n_trials * n, max(equilibration_steps, n_steps))
    activation = torch.rand(n_trials, n, generator=generator, device=device)
    bar = tqdm(total=equilibration_steps + n_steps, disable=not verbose, desc="simulating")
    for start, length in _segments(equilibration_steps, n_steps, block):
        times = torch.arange(start, start + length, device=device)
        drive = _drive(model, times, (length, n_trials, n)).expand(length, n_trials, n)
        raster = torch.empty(length, n_trials, n, device=device)
        for step in range(length):
            synaptic = torch.zeros(n_trials, n, device=device).index_add_(
                1, post, activation[:, pre] * weight)  # O(E) gather, robust on every device
            g = r * synaptic + drive[step]
            raster[step] = model.emit_spikes(model.non_linearity(g))
            activation = model.update_activation(raster[step], activation)
        spikes = SpikeBlock.from_raster(raster)
        _check(model, spikes, activation, start)
        bar.update(length)
        if start >= 0:
            yield spikes
    bar.close()


def reference_history_blocks(model, data: Data, n_steps: int, generator: torch.Generator,
                             n_trials: int, equilibration_steps: int,
                             verbose: bool) -> Iterator[SpikeBlock]:
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
    yield SpikeBlock.from_raster(raster)


def reference_activation_blocks(model, data: Data, n_steps: int, generator: torch.Generator,
                                n_trials: int, equilibration_steps: int,
                                verbose: bool) -> Iterator[SpikeBlock]:
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
    yield SpikeBlock.from_raster(raster)
