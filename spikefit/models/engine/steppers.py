r"""Steppers: how a block of steps turns the inputs into spikes, chosen once per run.

Spike-history models (the buffer of coming inputs,
:class:`~spikefit.models.engine.history.InputHistory`):

- :class:`CountStepper`: any emission, one step at a time in Python, through the model's own
  ``non_linearity`` and ``emit_spikes``.
- :class:`RescaledStepper`: a declared Bernoulli or Poisson emission, sampled by time
  rescaling: a neuron fires when the hazard it accumulated since its last spike passes an
  Exp(1) draw (exactly Bernoulli(p) per step, one random number per spike instead of per
  neuron-step).
- :class:`CompiledStepper`: a declared emission the compiled loops know (its type in
  :data:`COMPILED_DRAWS`, its link's in :data:`COMPILED_LINKS`), on the CPU: the whole block
  in :mod:`spikefit.models.native`'s ``history_block``, Bernoulli emissions by time rescaling
  (the same draws in the same order as the two above).

Synaptic-activation models: :class:`ActivationStepper` (Python, the model's own stages) and
:class:`CompiledActivationStepper` (``activation_block``, same draws).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch_geometric.data import Data

from spikefit.models.emissions import Bernoulli, Poisson, Threshold
from spikefit.models.engine.history import InputHistory
from spikefit.models.engine.results import SpikeBlock
from spikefit.models.links import Exponential, Identity, Logistic, Rectified
from spikefit.models.native import compiled_loops

#: The links the compiled loops evaluate, by exact type (a subclass may change the formula):
#: the loops' code for it and the model parameters it reads, in the loops' order.
COMPILED_LINKS = {
    Logistic: (0, ("theta", "dt")),
    Exponential: (1, ("alpha", "beta", "dt")),
    Rectified: (2, ("lambda_0", "theta", "dt")),
    Identity: (3, ()),
}
#: How the compiled loops draw spikes: Bernoulli spikes and Poisson counts by time rescaling
#: (spike-history models) or by ``torch.bernoulli`` and ``torch.poisson`` on every neuron's
#: rate (synaptic-activation models), threshold crossings of the model's ``theta``.
RESCALED, BERNOULLI, POISSON, THRESHOLD, RESCALED_COUNTS = range(5)
#: Time rescaling of each emission (spike-history models).
RESCALED_DRAWS = {BERNOULLI: RESCALED, POISSON: RESCALED_COUNTS}
#: Most Exp(1) draws of one neuron-trial in a step of time-rescaled counts: one more than the
#: largest credible count, so that a runaway is seen (as the compiled loop's kMaxRounds).
MAX_ROUNDS = 256
COMPILED_DRAWS = {Bernoulli: BERNOULLI, Poisson: POISSON, Threshold: THRESHOLD}
#: Neuron-trials per thread below which another thread of a compiled loop does not pay: the
#: threads meet every step, and on a busy machine a meeting can wait for a descheduled thread.
ROW_PER_THREAD = 4000
#: The same for draws on the whole row (Poisson, per-step Bernoulli): one thread draws them
#: all, in the row's order, so other threads pay only where the rest of a step dominates.
ROW_DRAW_PER_THREAD = 50_000


@dataclass
class LoopEmission:
    """A model's declared emission as the compiled loops take it: codes of its link and
    draw, whether Δt = 1 ms (the logistic odds are then e^(g - θ)), and the link's
    parameters (then the threshold's θ), one value per neuron [N] each."""

    link: int
    draw: int
    unit_dt: bool
    parameters: list[torch.Tensor]


def loop_emission(model, n: int, rescaled: bool) -> LoopEmission | None:
    """``model``'s effective emission for the compiled loops (Bernoulli by time rescaling if
    ``rescaled``), or None where they do not know it: another emission or link type, or a
    parameter that is neither one value nor one per neuron of the ``n``."""
    emission = model.effective_emission
    link = None if emission is None else emission.inverse_link
    if type(emission) not in COMPILED_DRAWS or type(link) not in COMPILED_LINKS:
        return None
    code, names = COMPILED_LINKS[type(link)]
    draw = COMPILED_DRAWS[type(emission)]
    names = names + ("theta",) * (draw == THRESHOLD)
    try:
        parameters = [
            getattr(model, name).detach().float().expand(n).contiguous() for name in names
        ]
        unit_dt = code == 0 and float(model.dt) == 1.0
    except (RuntimeError, ValueError):  # e.g. a parameter per trial
        return None
    return LoopEmission(
        code, RESCALED_DRAWS.get(draw, draw) if rescaled else draw, unit_dt, parameters
    )


@functools.cache
def addcmul_is_fused() -> bool:
    """Whether torch's ``addcmul`` (the Python loop's delivery of the coupling) rounds
    f + c·d once, a fused multiply-add (its vector kernels do where the CPU has one): the
    compiled loop then adds the coupling alike."""
    x = torch.full((64,), 1 + 2**-12)
    return bool(torch.full((64,), -1 - 2**-11).addcmul(x, x).ne(0).all())


@contextlib.contextmanager
def aten_threads(count: int | None) -> Iterator[None]:
    """Runs the body on ``count`` ATen threads (None: as set), restored after."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def loop_threads(width: int, draw: int) -> int:
    """Threads of a compiled loop over rows of ``width`` neuron-trials with spikes drawn as
    ``draw``: torch's number of threads (``torch.set_num_threads``), fewer where a thread
    would get less than :data:`ROW_PER_THREAD` of the row (:data:`ROW_DRAW_PER_THREAD` for
    draws on the whole row)."""
    share = ROW_DRAW_PER_THREAD if draw in (BERNOULLI, POISSON) else ROW_PER_THREAD
    return max(1, min(torch.get_num_threads(), width // share))


class ExponentialPools:
    """Exp(1) draws E of every trial from the trial's own generator (or their odds
    thresholds e^E - 1), handed out in order and refilled in bulk (one generator call per
    refill), so that trials can run independently.

    Args:
        size: draws per trial held at once.
        generator: the run's generator; trial 0 draws from it, trial k > 0 from a generator
            seeded from it.
        n_trials: number of trials K.
        odds: whether the pools hold e^E - 1 instead of E.
    """

    def __init__(
        self, size: int, generator: torch.Generator, n_trials: int, odds: bool = False
    ) -> None:
        device, self.odds = generator.device, odds
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
                if self.odds:
                    self.pools[k].expm1_()
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
    #: ATen threads of the Python work around a block (None: as set).
    aten_threads_around = None

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


def rescaled_start(
    n: int, n_trials: int, generator: torch.Generator, odds: bool
) -> tuple[ExponentialPools, torch.Tensor]:
    """The pools of a time-rescaled run (of odds thresholds where ``odds``) and what every
    neuron-trial has left before it fires, its first draw [K·N]."""
    draws = ExponentialPools(max(n, 4096), generator, n_trials, odds)
    trial_of = torch.arange(n_trials * n, device=generator.device) // n
    return draws, draws.take(trial_of).clone()


class RescaledStepper:
    r"""Time-rescaled sampling of a Bernoulli or Poisson emission. Every neuron-trial keeps
    what it has left before it fires. Bernoulli: the odds :math:`D`, first :math:`e^E - 1` of
    an Exp(1) draw E; a step with odds :math:`o = p / (1 - p)` makes it
    :math:`(D - o) / (1 + o)`, so that :math:`\log(1 + D)` loses the step's hazard
    :math:`\log(1 + o) = -\log(1 - p)`, and the neuron fires and draws again when D reaches 0
    (exactly Bernoulli(p) per step, without a logarithm per neuron-step). Poisson: the hazard
    :math:`R`, an Exp(1) draw, less the expected count μ of every step; the neuron fires once
    per Exp(1) draw added to R until R is above 0 again, which gives Poisson(μ) counts (a
    Poisson process of rate μ per step), in rounds of draws in the order of the
    neuron-trials, at most :data:`MAX_ROUNDS` in a step.

    Args:
        model: the model (its emission a :class:`~spikefit.models.emissions.Bernoulli` or
            :class:`~spikefit.models.emissions.Poisson`).
        history: the run's input buffer.
        generator: the run's generator (the Exp(1) thresholds of every trial come from it).
    """

    zeroes_read_rows = False
    #: ATen threads of the Python work around a block (None: as set).
    aten_threads_around = None

    def __init__(self, model, history: InputHistory, generator: torch.Generator) -> None:
        self.model, self.history = model, history
        n, n_trials = history.n_neurons, history.n_trials
        self.emission = model.effective_emission
        self.counting = isinstance(self.emission, Poisson)
        self.draws, self.remaining = rescaled_start(n, n_trials, generator, not self.counting)
        self.trial_of = torch.arange(n_trials * n, device=generator.device) // n
        self.raster = torch.empty(
            history.future.shape[0] - history.window,
            n_trials * n,
            dtype=torch.float32 if self.counting else torch.bool,
            device=generator.device,
        )

    def block(self, length: int) -> SpikeBlock:
        inputs, remaining = self.history.inputs, self.remaining
        left = remaining.view(self.history.n_trials, -1)
        for step in range(length):
            if not self.counting:
                odds = self.emission.odds(self.model, inputs[step])
                left.sub_(odds).div_(odds + 1)
                fired = torch.le(remaining, 0, out=self.raster[step]).nonzero().squeeze(1)
                remaining.index_copy_(0, fired, self.draws.take(self.trial_of[fired]))
                self.history.deliver(step, fired, None)
                continue
            left.sub_(self.emission.rates(self.model, inputs[step]))
            fired = remaining.le(0).nonzero().squeeze(1)
            counts = self.raster[step].zero_()
            counts[fired] = 1
            remaining.index_add_(0, fired, self.draws.take(self.trial_of[fired]))
            pending = fired
            for _ in range(MAX_ROUNDS - 1):
                pending = pending[remaining[pending] <= 0]
                if not len(pending):
                    break
                counts.index_add_(0, pending, torch.ones_like(pending, dtype=counts.dtype))
                remaining.index_add_(0, pending, self.draws.take(self.trial_of[pending]))
            self.history.deliver(step, fired, counts[fired])
        return SpikeBlock.from_raster(self.raster[:length])

    def latest(self, length: int) -> torch.Tensor:
        return self.remaining


class CompiledStepper:
    """A declared emission the compiled loops know, each block in ``history_block`` on
    :func:`loop_threads` threads (it reads the buffer's rows and zeroes them).

    Args:
        model: the model.
        history: the run's input buffer.
        generator: the run's generator.
        loops: the compiled loops.
        emission: the model's emission for them.
    """

    zeroes_read_rows = True
    #: The Python work around a block runs on one ATen thread: the workers of a parallel
    #: operation spin for a while after it, on the cores the loop's threads need.
    aten_threads_around = 1

    def __init__(
        self, model, history: InputHistory, generator: torch.Generator, loops, emission
    ) -> None:
        self.history, self.width = history, history.future.shape[1]
        self.rescaled = emission.draw in RESCALED_DRAWS.values()
        if self.rescaled:
            self.draws, self.remaining = rescaled_start(
                history.n_neurons, history.n_trials, generator, emission.draw == RESCALED
            )
            generators, pools = self.draws.generators, self.draws.pools
        else:
            self.remaining, generators, pools = torch.empty(0), [generator], torch.empty(0, 0)
        self.last_input = torch.empty(self.width)
        propagate, own = history.propagate, history.own
        self.run = functools.partial(
            loops.history_block,
            propagate.targets,
            propagate.degrees,
            propagate.weights,
            history.coupling,
            addcmul_is_fused(),
            torch.zeros(0, 1) if own is None else own,
            emission.link,
            emission.draw,
            emission.unit_dt,
            emission.parameters,
            generators,
            pools,
            history.future,
            self.remaining,
            self.last_input,
        )
        self.threads, self.aten_threads = (
            loop_threads(self.width, emission.draw),
            torch.get_num_threads(),
        )

    def block(self, length: int) -> SpikeBlock:
        positions = torch.tensor(self.draws.positions if self.rescaled else [])
        keys, counts = self.run(positions.long(), length, self.threads, self.aten_threads)
        if self.rescaled:
            self.draws.positions = positions.tolist()
        return SpikeBlock(length, keys // self.width, keys % self.width, counts)

    def latest(self, length: int) -> torch.Tensor:
        """What must stay finite after a block: what is left before a rescaled spike, else the
        last input."""
        return self.remaining if self.rescaled else self.last_input


def choose_stepper(model, history: InputHistory, generator: torch.Generator):
    """The fastest stepper that is exact for ``model``: compiled for an emission the compiled
    loops know, on the CPU (where they are built), time rescaling for any other declared
    Bernoulli or Poisson emission, else the model's own stages."""
    emission = None
    if generator.device.type == "cpu":
        emission = loop_emission(model, history.n_neurons, rescaled=True)
    loops = compiled_loops() if emission is not None else None
    if loops is not None:
        return CompiledStepper(model, history, generator, loops, emission)
    if isinstance(model.effective_emission, (Bernoulli, Poisson)):
        return RescaledStepper(model, history, generator)
    return CountStepper(model, history, generator)


class ActivationStepper:
    r"""A synaptic-activation model step by step in Python: :math:`g = r W_0^\top s + E`
    (one O(E) gather per step, robust on every device), the model's
    ``emit_spikes(non_linearity(g))`` and ``update_activation``.

    Args:
        model: the model.
        data: the network(s).
        activation: the activation s [K, N] at the start, updated in place.
    """

    aten_threads_around = None

    def __init__(self, model, data: Data, activation: torch.Tensor) -> None:
        self.model, self.activation = model, activation
        self.pre, self.post = data.edge_index
        self.weight, self.r = data.W0.float(), model.recurrence()

    def block(self, inputs: torch.Tensor) -> SpikeBlock:
        """The spikes of the steps of ``inputs`` [L, K, N] (background, noise, stimulus)."""
        model, activation = self.model, self.activation
        raster = torch.empty(inputs.shape, device=inputs.device)
        for step in range(len(inputs)):
            synaptic = torch.zeros_like(activation).index_add_(
                1, self.post, activation[:, self.pre] * self.weight
            )
            g = self.r * synaptic + inputs[step]
            raster[step] = model.emit_spikes(model.non_linearity(g))
            activation.copy_(model.update_activation(raster[step], activation))
        return SpikeBlock.from_raster(raster)


class CompiledActivationStepper:
    """A synaptic-activation model with an emission the compiled loops know, each block in
    ``activation_block`` on :func:`loop_threads` threads (the same sums, in the order of the
    network's edges, and the same draws as :class:`ActivationStepper`).

    Args:
        model: the model.
        data: the network(s).
        activation: the activation s [K, N] at the start, updated in place.
        generator: the run's generator (the model's).
        loops: the compiled loops.
        emission: the model's emission for them.
    """

    aten_threads_around = 1  # as CompiledStepper's

    def __init__(
        self,
        model,
        data: Data,
        activation: torch.Tensor,
        generator: torch.Generator,
        loops,
        emission: LoopEmission,
    ) -> None:
        n = data.num_nodes
        pre, post = data.edge_index
        order = torch.argsort(post, stable=True)  # incoming edges, in the network's order
        starts = torch.zeros(n + 1, dtype=torch.long)
        starts[1:] = torch.cumsum(torch.bincount(post, minlength=n), 0)
        decay = 1 - model.dt / model.tau  # update_activation's factor
        self.activation = activation
        self.run = functools.partial(
            loops.activation_block,
            starts,
            pre[order].contiguous(),
            data.W0.float()[order].contiguous(),
            *(
                value.detach().float().expand(n).contiguous()
                for value in (model.recurrence(), decay, model.dt)
            ),
            emission.link,
            emission.draw,
            emission.unit_dt,
            emission.parameters,
            [generator],
            activation.view(-1),
        )
        self.threads, self.aten_threads = (
            loop_threads(activation.numel(), emission.draw),
            torch.get_num_threads(),
        )

    def block(self, inputs: torch.Tensor) -> SpikeBlock:
        length, width = inputs.shape[0], self.activation.numel()
        keys, counts = self.run(
            inputs.reshape(length, width).contiguous(),
            length,
            self.threads,
            self.aten_threads,
        )
        return SpikeBlock(length, keys // width, keys % width, counts)


def choose_activation_stepper(
    model, data: Data, activation: torch.Tensor, generator: torch.Generator
):
    """Compiled for an emission the compiled loops know, on the CPU (where they are built),
    else the model's own stages in Python."""
    emission = None
    if generator.device.type == "cpu":
        emission = loop_emission(model, data.num_nodes, rescaled=False)
    loops = compiled_loops() if emission is not None else None
    if loops is not None:
        return CompiledActivationStepper(model, data, activation, generator, loops, emission)
    return ActivationStepper(model, data, activation)
