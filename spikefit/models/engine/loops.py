r"""Simulation loops: generators of :class:`~spikefit.models.engine.results.SpikeBlock`\ s,
the spikes of consecutive blocks of steps (equilibration first, then the recorded steps), so
a caller can keep a dense raster or spike times, or stream them to disk.

- :func:`history_blocks`: spike-history models with declared kernels (the buffer of coming
  inputs, :class:`~spikefit.models.engine.history.InputHistory`, and a stepper chosen once,
  :mod:`~spikefit.models.engine.steppers`);
- :func:`activation_blocks`: synaptic-activation models with declared kernels;
- :func:`reference_history_blocks`, :func:`reference_activation_blocks`: the seed
  simulator's per-step ``forward`` on a state window, for any model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch_geometric.data import Data
from tqdm.auto import tqdm

from spikefit.checks import InputError
from spikefit.models.engine.history import InputHistory
from spikefit.models.engine.results import SpikeBlock
from spikefit.models.engine.steppers import (
    aten_threads,
    choose_activation_stepper,
    choose_stepper,
)

#: Largest number of (step, trial, neuron) values in one block buffer.
BLOCK_ELEMENTS = 1 << 22
#: A neuron emitting more spikes than this in one step means the activity ran away (at
#: Δt = 1 ms, 255 kHz; the most a uint8 raster, the default, holds).
MAX_COUNT_PER_STEP = 255


class RunawayActivityError(InputError):
    """Raised when simulated activity explodes (non-finite input or absurd spike counts),
    naming the model's recurrence scale r as the parameter to lower."""


def segments(equilibration_steps: int, n_steps: int, block: int) -> Iterator[tuple[int, int]]:
    """(start, length) of the blocks: equilibration (t < 0) first, then the recorded steps."""
    for begin, end in ((-equilibration_steps, 0), (0, n_steps)):
        for start in range(begin, end, block):
            yield start, min(block, end - start)


def block_length(width: int, longest: int) -> int:
    """Steps per block for ``width`` neuron-trials, so one block buffer stays bounded (and no
    longer than the ``longest`` segment needs)."""
    return max(1, min(1024, longest, BLOCK_ELEMENTS // width))


def drive(model, times: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Background plus stimulus input for the steps ``times``, broadcastable to [L, K, N]."""
    background = model.background_input(shape)
    if model.stimulus is None:
        return background
    return background + model.stimulus_block(times, shape[2]).unsqueeze(1)


def check_activity(model, spikes: SpikeBlock, latest: torch.Tensor, start: int) -> None:
    """Raises if ``latest`` (the input, or what is left before rescaled spikes) is non-finite
    or a count is absurd."""
    if (
        not torch.isfinite(latest).all()
        or len(spikes.counts)
        and spikes.counts.max() > MAX_COUNT_PER_STEP
    ):
        raise RunawayActivityError(
            f"{type(model).__name__}.r",
            f"runaway activity: the rates exploded "
            f"{'during equilibration' if start < 0 else f'from step {start} on'} (non-finite "
            f"input or more than {MAX_COUNT_PER_STEP} spikes per neuron per step)",
            "a stable network: lower r, b or the stimulus strength",
        )


#: Runs the block of ``length`` steps from ``start``: its spikes, and what must stay finite.
BlockRun = Callable[[int, int], tuple[SpikeBlock, torch.Tensor]]


def blocks(
    model,
    equilibration_steps: int,
    n_steps: int,
    block: int,
    verbose: bool,
    run: BlockRun,
    after: Callable[[int], None] | None = None,
    threads_around: int | None = None,
) -> Iterator[SpikeBlock]:
    """The recorded blocks of a fast run: every block (equilibration first) runs, its
    activity is checked, ``after`` gets its length, and the progress bar advances; ``run``
    and ``after`` on ``threads_around`` ATen threads (None: as set)."""
    bar = tqdm(total=equilibration_steps + n_steps, disable=not verbose, desc="simulating")
    for start, length in segments(equilibration_steps, n_steps, block):
        with aten_threads(threads_around):
            spikes, latest = run(start, length)
            check_activity(model, spikes, latest, start)
            if after is not None:
                after(length)
        bar.update(length)
        if start >= 0:
            yield spikes
    bar.close()


def history_blocks(
    model,
    data: Data,
    n_steps: int,
    generator: torch.Generator,
    n_trials: int,
    equilibration_steps: int,
    verbose: bool,
) -> Iterator[SpikeBlock]:
    """Fast engine for spike-history (GLM/LNP) models with declared separable kernels: every
    trial starts from random spikes at step -1, then each block adds its background and
    stimulus to the buffered inputs and lets the stepper emit and deliver its spikes."""
    n, device = data.num_nodes, data.W0.device
    block = block_length(n_trials * n, max(equilibration_steps, n_steps))
    history = InputHistory(model, data, n_trials, block)
    initial = torch.randint(0, 2, (n_trials * n,), generator=generator, device=device)
    history.deliver(-1, initial.nonzero().squeeze(1), None)
    stepper = choose_stepper(model, history, generator)

    def run(start: int, length: int) -> tuple[SpikeBlock, torch.Tensor]:
        times = torch.arange(start, start + length, device=device)
        history.add_drive(drive(model, times, (length, n_trials, n)), length)
        return stepper.block(length), stepper.latest(length)

    def after(length: int) -> None:
        history.advance(length, zero_read=not stepper.zeroes_read_rows)

    yield from blocks(
        model,
        equilibration_steps,
        n_steps,
        block,
        verbose,
        run,
        after,
        threads_around=stepper.aten_threads_around,
    )


def activation_blocks(
    model,
    data: Data,
    n_steps: int,
    generator: torch.Generator,
    n_trials: int,
    equilibration_steps: int,
    verbose: bool,
) -> Iterator[SpikeBlock]:
    r"""Engine for synaptic-activation models: :math:`g = r W_0^\top s + b + E`, then s
    is updated by the model's :meth:`update_activation`; every trial starts from a uniform
    random activation, and a stepper chosen once runs the blocks."""
    n, device = data.num_nodes, data.W0.device
    block = block_length(n_trials * n, max(equilibration_steps, n_steps))
    activation = torch.rand(n_trials, n, generator=generator, device=device)
    stepper = choose_activation_stepper(model, data, activation, generator)

    def run(start: int, length: int) -> tuple[SpikeBlock, torch.Tensor]:
        times = torch.arange(start, start + length, device=device)
        inputs = drive(model, times, (length, n_trials, n)).expand(length, n_trials, n)
        return stepper.block(inputs), activation

    yield from blocks(
        model,
        equilibration_steps,
        n_steps,
        block,
        verbose,
        run,
        threads_around=stepper.aten_threads_around,
    )


def reference_history_blocks(
    model,
    data: Data,
    n_steps: int,
    generator: torch.Generator,
    n_trials: int,
    equilibration_steps: int,
    verbose: bool,
) -> Iterator[SpikeBlock]:
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
            state[:, t] = model(edge_index, W, state[:, t - window : t], t=time)
        raster[:, trial] = state[:, window + equilibration_steps :].t()
    yield SpikeBlock.from_raster(raster)


def reference_activation_blocks(
    model,
    data: Data,
    n_steps: int,
    generator: torch.Generator,
    n_trials: int,
    equilibration_steps: int,
    verbose: bool,
) -> Iterator[SpikeBlock]:
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
