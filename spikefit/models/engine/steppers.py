r"""Steppers: how a block of steps turns the buffered inputs into spikes, chosen once per run.

- :class:`CountStepper`: any emission, one step at a time in Python, through the model's own
  ``non_linearity`` and ``emit_spikes``.
- :class:`RescaledStepper`: a declared Bernoulli emission, sampled by time rescaling: a
  neuron fires when the hazard it accumulated since its last spike passes an Exp(1) draw
  (exactly Bernoulli(p) per step, one random number per spike instead of per neuron-step).
- :class:`CompiledStepper`: the same for the logistic link on the CPU, the whole block in the
  compiled loop of :mod:`spikefit.models.native` (the same draws in the same order).
"""

from __future__ import annotations

import functools

import torch

from spikefit.models.emissions import Bernoulli
from spikefit.models.engine.history import InputHistory
from spikefit.models.engine.results import SpikeBlock
from spikefit.models.links import Logistic
from spikefit.models.native import logistic_kernel


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
        self.generators = [generator] + [
            torch.Generator(device).manual_seed(seed) for seed in seeds.tolist()
        ]
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
            return self.pools[0, first[0] : first[0] + start]
        index = torch.tensor(first, device=trials.device)[trials]
        return self.pools[trials, index + torch.arange(start, device=trials.device)]


class CountStepper:
    """Spike counts drawn from the model's ``emit_spikes(non_linearity(g))``, step by step.

    Args:
        model: the model.
        history: the run's input buffer.
        generator: unused (the model draws from its own generator).
    """

    zeroes_read_rows = False

    def __init__(self, model, history: InputHistory, generator: torch.Generator) -> None:
        self.model, self.history = model, history
        self.raster = torch.empty(
            history.future.shape[0] - history.window,
            history.future.shape[1],
            device=history.future.device,
        )

    def block(self, length: int) -> SpikeBlock:
        """The spikes of the next ``length`` steps, delivered into the buffer as they come."""
        inputs = self.history.inputs
        for step in range(length):  # inputs [K, N]: per-neuron parameters broadcast
            counts = self.model.emit_spikes(self.model.non_linearity(inputs[step])).view(-1)
            self.raster[step] = counts
            active = counts.nonzero().squeeze(1)
            self.history.deliver(step, active, counts[active])
        return SpikeBlock.from_raster(self.raster[:length])

    def latest(self, length: int) -> torch.Tensor:
        """What must stay finite after a block: the last input."""
        return self.history.future[length - 1]


class RescaledStepper:
    """Time-rescaled sampling of a Bernoulli emission with the emission's hazard.

    Args:
        model: the model (its emission is a :class:`~spikefit.models.emissions.Bernoulli`).
        history: the run's input buffer.
        generator: the run's generator (the Exp(1) thresholds of every trial come from it).
    """

    zeroes_read_rows = False

    def __init__(self, model, history: InputHistory, generator: torch.Generator) -> None:
        self.model, self.history = model, history
        n, n_trials = history.n_neurons, history.n_trials
        self.emission = model.effective_emission
        self.draws = ExponentialPools(max(n, 4096), generator, n_trials)
        self.trial_of = torch.arange(n_trials * n, device=generator.device) // n
        self.remaining = self.draws.take(self.trial_of).clone()  # hazard left before firing
        self.raster = torch.empty(
            history.future.shape[0] - history.window,
            n_trials * n,
            dtype=torch.bool,
            device=generator.device,
        )

    def block(self, length: int) -> SpikeBlock:
        inputs, remaining = self.history.inputs, self.remaining
        for step in range(length):
            hazard = self.emission.hazard(self.model, inputs[step])
            remaining.view(self.history.n_trials, -1).sub_(hazard)
            active = torch.le(remaining, 0, out=self.raster[step]).nonzero().squeeze(1)
            remaining.index_copy_(0, active, self.draws.take(self.trial_of[active]))
            self.history.deliver(step, active, None)
        return SpikeBlock.from_raster(self.raster[:length])

    def latest(self, length: int) -> torch.Tensor:
        return self.remaining


class CompiledStepper(RescaledStepper):
    """:class:`RescaledStepper` for the logistic link, each block in the compiled loop (it
    reads the buffer's rows and zeroes them)."""

    zeroes_read_rows = True

    def __init__(self, model, history: InputHistory, generator: torch.Generator, kernel) -> None:
        super().__init__(model, history, generator)
        own = history.own
        self.run = functools.partial(
            kernel,
            history.propagate.targets,
            history.propagate.weights,
            history.coupling.view(-1).contiguous(),
            torch.zeros(0, 1) if own is None else own,
            model.theta.float().expand(history.n_neurons).contiguous(),
            float(model.dt),
            self.draws.generators,
            self.draws.pools,
            history.future,
            self.remaining,
        )

    def block(self, length: int) -> SpikeBlock:
        positions = torch.tensor(self.draws.positions)
        keys = self.run(positions, length)
        self.draws.positions = positions.tolist()
        width = self.remaining.shape[0]
        return SpikeBlock(
            length, keys // width, keys % width, torch.ones(len(keys), dtype=torch.bool)
        )


def choose_stepper(model, history: InputHistory, generator: torch.Generator):
    """The fastest stepper that is exact for ``model``: compiled for a declared Bernoulli
    emission with the logistic link on the CPU (one basis function, loop built), time
    rescaling for any other declared Bernoulli emission, else the model's own stages."""
    emission = model.effective_emission
    if not isinstance(emission, Bernoulli):
        return CountStepper(model, history, generator)
    if (
        isinstance(emission.inverse_link, Logistic)
        and generator.device.type == "cpu"
        and history.coupling.shape[1] == 1
    ):
        kernel = logistic_kernel()
        if kernel is not None:
            return CompiledStepper(model, history, generator, kernel)
    return RescaledStepper(model, history, generator)
