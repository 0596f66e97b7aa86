"""Base class of all spikefit models: input → non-linearity → spike emission on a graph."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn import MessagePassing

from spikefit.checks import Check, InputError, field_name, finite, positive, whole
from spikefit.files import load_file
from spikefit.models.coupling import postsynaptic_sums
from spikefit.models.emissions import Emission
from spikefit.models.engine import (
    SpikeEvents,
    collect,
    history_blocks,
    reference_history_blocks,
)

positive_ms = partial(positive, unit="ms")
"""Check of a step Δt or a time constant: finite and > 0, in ms."""
whole_steps = partial(whole, unit="of steps")
"""Check of a period in steps: a whole number ≥ 0."""
window_steps = partial(whole, minimum=1, unit="of steps")
"""Check of a history window in steps: a whole number ≥ 1."""


class BaseModel(MessagePassing):
    r"""Base class for networks of stochastic spiking neurons.

    A step from time :math:`t` to :math:`t+1` has three stages, each a method:

    #. :meth:`input`: :math:`g_i(t+1)` from the spike history (the ``state`` window
       [N, T], oldest column first), the background and the stimulus :math:`\mathcal{E}_i(t+1)`;
    #. :meth:`non_linearity`: the expected spike count (or probability) per step;
    #. :meth:`emit_spikes`: a draw from the emission distribution.

    What a model *declares* decides how it simulates, calibrates and fits:

    - **Kernels** (:meth:`coupling_basis`, or :meth:`coupling_kernel` for one function, with
      per-edge weights :meth:`edge_weights`, :meth:`self_kernel`, :meth:`recurrence`,
      :meth:`background_input`): an edge :math:`j \to i` carries
      :math:`r_i \sum_b w_{jib} B_b(\tau)` and neuron :math:`i` feels its own spikes through
      :math:`\mathrm{ref}_i(\tau)` (lag order, :math:`\tau = 0` first). The fast engine,
      teacher forcing and the fits read this one declaration. It holds while the input stage
      (:meth:`input`, :meth:`message`, :meth:`connectivity_filter`, …) is not overridden in a
      subclass below the one that declared the kernels (:attr:`declares_kernels`); a model
      that overrides it runs its own :meth:`input` on the per-step reference path, and
      teacher forcing calls its :meth:`input` on every step of the history.
    - **Emission** (the class attribute ``emission``, :mod:`spikefit.models.emissions`): the
      distribution of spikes and its inverse link. :meth:`non_linearity` and
      :meth:`emit_spikes` evaluate it; a subclass that overrides one of them without declaring
      its own emission keeps its methods (:attr:`effective_emission`).

    Parameters registered with ``tunable=True`` are ``nn.Parameter``\ s (calibration and
    likelihood fits may change them); the rest are buffers. All random draws come from the
    model's own ``torch.Generator``.
    """

    #: The spike emission and its inverse link; None: the model's own stages.
    emission: Emission | None = None
    #: Methods that declare the separable kernels, and the input stage they describe.
    KERNEL_DECLARATIONS = (
        "coupling_basis",
        "self_basis",
        "self_kernel_weights",
        "coupling_kernel",
        "edge_weights",
        "self_kernel",
        "recurrence",
        "background_input",
    )
    INPUT_STAGE = (
        "input",
        "coupled_input",
        "synaptic_input",
        "message",
        "aggregate",
        "message_and_aggregate",
        "update",
        "connectivity_filter",
    )

    def __init__(self, rng: torch.Generator | None = None) -> None:
        super().__init__(aggr="add")
        self._rng = rng if rng is not None else torch.Generator()
        self.stimulus: Callable | None = None

    # ------------------------------------------------------------------ parameters
    def _register(
        self,
        name: str,
        value: float | torch.Tensor,
        tunable: bool = False,
        dtype: torch.dtype = torch.float32,
        check: Check = finite,
    ) -> None:
        """Registers ``value`` as a parameter (``tunable``) or a buffer once ``check`` (a
        :mod:`spikefit.checks` validator; by default all values finite) accepts it as the
        field ``Class.name``."""
        tensor = torch.as_tensor(check(field_name(self, name), value), dtype=dtype).clone()
        if tunable:
            self.register_parameter(name, nn.Parameter(tensor, requires_grad=False))
        else:
            self.register_buffer(name, tensor)

    @property
    def tunable_parameters(self) -> dict[str, nn.Parameter]:
        """The model's (and its stimulus's) parameters by name."""
        return dict(self.named_parameters())

    # ------------------------------------------------------------------ kernels
    @property
    def window(self) -> int:
        """Length T of the spike history window, in steps."""
        return int(self.T)

    def coupling_kernel(self) -> torch.Tensor:
        r"""Coupling kernel :math:`c(\tau)`, :math:`\tau = 0..T-1` [T] (lag order)."""
        return torch.ones(1, device=self.dt.device)

    def coupling_basis(self) -> torch.Tensor:
        r"""Basis :math:`B_b(\tau)` of the coupling kernels [B, T] (lag order); an edge's
        kernel is :math:`\sum_b w_{eb} B_b` with its :meth:`edge_weights`. Default: the one
        :meth:`coupling_kernel`."""
        return self.coupling_kernel().unsqueeze(0)

    def edge_weights(self, W0: torch.Tensor) -> torch.Tensor:
        """Every edge's weights on the coupling basis: the network's ``W0`` [E] (B = 1) or
        [E, B] (one weight per basis function)."""
        return W0

    def basis_weights(self, W0: torch.Tensor) -> torch.Tensor:
        """:meth:`edge_weights`, checked against the coupling basis: [E] for one function,
        [E, B] for B; an InputError naming ``W0`` otherwise."""
        weights, n_basis = self.edge_weights(W0), len(self.coupling_basis())
        if (n_basis == 1 and weights.dim() != 1) or (
            n_basis > 1 and (weights.dim() != 2 or weights.shape[1] != n_basis)
        ):
            expected = (
                "[E], one weight per edge"
                if n_basis == 1
                else (f"[E, {n_basis}], one weight per edge and basis function")
            )
            raise InputError(
                "W0",
                f"shape {list(weights.shape)} does not fit "
                f"{type(self).__name__}'s {n_basis}-function coupling basis",
                expected,
            )
        return weights

    def self_kernel(self) -> torch.Tensor | None:
        r"""Self (refractory) kernel :math:`\mathrm{ref}(\tau)`, [T] or [N, T], or ``None``."""
        return None

    def recurrence(self) -> torch.Tensor:
        """Scale r of the coupling input (1 if the model has none): a scalar, or one value
        per neuron [N] that scales the neuron's incoming coupling."""
        return getattr(self, "r", torch.ones((), device=self.dt.device))

    def edge_recurrence(self, edge_index: torch.Tensor) -> torch.Tensor:
        """r of every edge's postsynaptic neuron [E, 1] (or the scalar r)."""
        r = self.recurrence()
        return r[edge_index[1]].unsqueeze(1) if r.dim() else r

    def background_input(
        self, shape: torch.Size | tuple[int, ...], noise: bool = True
    ) -> torch.Tensor:
        """Background input, broadcastable to ``shape`` [..., N] (default: b, or 0);
        ``noise=False`` leaves out any random part."""
        return getattr(self, "b", torch.zeros((), device=self.dt.device))

    @classmethod
    def _covers(cls, declarations: tuple[str, ...], stages: tuple[str, ...]) -> bool:
        """Whether the latest class that defines one of ``declarations`` is a subclass of (or
        the same as) every class that defines one of ``stages``: no stage was overridden
        below the declaration (the rule of PyG's ``inspector.implements``, by class)."""

        def latest(names: tuple[str, ...]) -> int:
            return min(
                depth
                for depth, owner in enumerate(cls.__mro__)
                if any(name in vars(owner) for name in names)
            )

        return latest(declarations) <= latest(stages)

    @property
    def declares_kernels(self) -> bool:
        """Whether the input stage is the separable one of the declared kernels (else the
        model's own :meth:`input` runs on every step)."""
        return self._covers(self.KERNEL_DECLARATIONS, self.INPUT_STAGE)

    @property
    def effective_emission(self) -> Emission | None:
        """The emission that stands for the model's :meth:`non_linearity` and
        :meth:`emit_spikes`: the declared one; with the model's own non-linearity as its
        link where a subclass overrode that alone; None where a subclass overrode
        :meth:`emit_spikes` (a distribution spikefit does not know) or none is declared."""
        emission = self.emission
        if emission is None or not self._covers(("emission",), ("emit_spikes",)):
            return None
        if not self._covers(("emission",), ("non_linearity",)):
            return emission.with_link(None)
        return emission

    def connectivity_filter(
        self, W0: torch.Tensor, edge_index: torch.Tensor, num_nodes: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Edge kernels, flipped in time.

        .. math::
            W[e, k] = (W_0)_e \, c(T-1-k), \qquad W[(i,i), k] = \mathrm{ref}_i(T-1-k)

        Column T-1 is lag 0; with a basis, :math:`W[e] = \sum_b w_{eb} B_b` flipped. Models
        with a self kernel append one self-edge per neuron after the coupling edges, so row
        e < E still belongs to ``W0[e]``.

        Returns:
            ``(W [E', T], edge_index [2, E'])``.
        """
        check_graph(edge_index, W0, num_nodes)
        weights, basis = self.basis_weights(W0), self.coupling_basis().flip(-1)
        W = weights.unsqueeze(1) * basis[0] if weights.dim() == 1 else weights @ basis
        ref = self.self_kernel()
        if ref is None:
            return W, edge_index
        n = num_nodes if num_nodes is not None else int(edge_index.max()) + 1
        nodes = torch.arange(n, device=edge_index.device)
        W_self = ref.flip(-1).expand(n, -1)
        return torch.cat([W, W_self]), torch.cat([edge_index, torch.stack([nodes, nodes])], 1)

    # ------------------------------------------------------------------ the three stages
    def synaptic_input(
        self, edge_index: torch.Tensor, W: torch.Tensor, state: torch.Tensor
    ) -> torch.Tensor:
        r""":math:`\sum_{e: post(e)=i} \sum_k W[e,k] \, state[pre(e), k]` [N]."""
        return self.propagate(edge_index, W=W, state=state, size=(state.shape[0],) * 2).squeeze(-1)

    def message(self, state_j: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        return (state_j * W).sum(dim=1, keepdim=True)

    def coupled_input(
        self, edge_index: torch.Tensor, W: torch.Tensor, state: torch.Tensor
    ) -> torch.Tensor:
        """Synaptic input with r scaling the coupling edges and not the self edges [N]."""
        is_self = (edge_index[0] == edge_index[1]).unsqueeze(1)
        scaled = torch.where(is_self, W, self.edge_recurrence(edge_index) * W)
        return self.synaptic_input(edge_index, scaled, state)

    def input(
        self, edge_index: torch.Tensor, W: torch.Tensor, state: torch.Tensor, t: int = -1
    ) -> torch.Tensor:
        r""":math:`g_i(t+1) = r\sum_j\sum_\tau (W_0)_{ji} X_j(t-\tau) c(\tau) +
        \sum_\tau \mathrm{ref}(\tau) X_i(t-\tau) + b_i + \mathcal{E}_i(t+1)` [N]."""
        background = self.background_input((state.shape[0],))
        return self.coupled_input(edge_index, W, state) + background + self.stimulus_input(t)

    def non_linearity(self, input: torch.Tensor) -> torch.Tensor:
        """The expected count (or probability) per step: the emission's inverse link (the
        identity without an emission)."""
        if self.emission is None or self.emission.inverse_link is None:
            return input
        return self.emission.inverse_link(self, input)

    def emit_spikes(self, rates: torch.Tensor) -> torch.Tensor:
        """Spikes drawn from the emission given ``rates``, with the model's generator."""
        if self.emission is None:
            raise NotImplementedError(
                f"{type(self).__name__} declares no emission: define "
                f"emit_spikes or the class attribute emission"
            )
        return self.emission.sample(self, rates, self._rng)

    @property
    def memory_steps(self) -> int:
        """Steps of history that shape the input; spikes further back do not matter."""
        return self.window

    def causal_filter(self, spikes: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        r""":math:`\sum_{\tau=0}^{T-1} k(\tau) X(s-1-\tau)` for every step s [K, N, S], from
        ``spikes`` [K, N, S] and a kernel [T] or [N, T] in lag order (earlier spikes count
        as silent). A kernel with gradients takes one grouped convolution; a fixed one
        shifted multiply-adds of its nonzero lags (2-3× faster on the CPU)."""
        n, steps = spikes.shape[1], spikes.shape[2]
        if kernel.requires_grad:
            padded = torch.nn.functional.pad(spikes, (self.window, 0))
            weight = kernel.flip(-1).expand(n, self.window).unsqueeze(1)
            return torch.nn.functional.conv1d(padded, weight, groups=n)[..., :steps]
        filtered = torch.zeros_like(spikes)
        lags = (kernel != 0).reshape(-1, kernel.shape[-1]).any(dim=0).nonzero().flatten()
        for lag in lags[lags < steps - 1].tolist():
            weight = kernel[..., lag].unsqueeze(-1) if kernel.dim() == 2 else kernel[lag]
            filtered[..., lag + 1 :].addcmul_(spikes[..., : steps - lag - 1], weight)
        return filtered

    def basis_filter(self, spikes: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        r""":math:`\sum_{\tau} B_b(\tau) X_j(s-1-\tau)` for every basis function b [B, T]
        and neuron j of ``spikes`` [K, N, S] → [K, B·N, S] (row b·N + j), by one grouped
        convolution (earlier spikes count as silent)."""
        n_trials, n, steps = spikes.shape
        n_basis, window = basis.shape
        padded = torch.nn.functional.pad(spikes, (window, 0))
        weight = basis.flip(-1).repeat(n, 1).unsqueeze(1)  # [N·B, 1, T], neuron-major
        filtered = torch.nn.functional.conv1d(padded, weight, groups=n)[..., :steps]
        return (
            filtered.view(n_trials, n, n_basis, steps)
            .transpose(1, 2)
            .reshape(n_trials, n_basis * n, steps)
        )

    def presynaptic_trace(self, spikes: torch.Tensor) -> torch.Tensor:
        """What each neuron sends along its edges at every step [K, B·N, S]: its spikes
        filtered by each function b of the coupling basis (row b·N + j)."""
        basis = self.coupling_basis()
        if len(basis) == 1:
            return self.causal_filter(spikes, basis[0])
        return self.basis_filter(spikes, basis)

    def self_basis(self) -> torch.Tensor | None:
        """The basis [A, T] of a self kernel that is a weighted sum of it with the weights
        :meth:`self_kernel_weights` (None: the self kernel is not on a basis)."""
        return None

    def self_kernel_weights(self) -> torch.Tensor | None:
        """The weights [A] (shared) or [N, A] (per neuron) of the self kernel on its basis."""
        return None

    @property
    def n_covariates(self) -> int:
        """Number C of external covariates whose filtered values enter the input (0: none)."""
        return 0

    def covariate_filters(self) -> torch.Tensor | None:
        """The covariate filters [C, L] (shared) or [N, C, L] (per neuron) in lag order, or
        None without covariates."""
        return None

    def covariate_input(self, covariates: torch.Tensor) -> torch.Tensor | None:
        """The input [K, N, S] of the covariates [K, C, S] at every step (None: the model
        has no covariate term). Fit-only: simulations run without it."""
        return None

    def spike_traces(self, spikes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The history terms of the input that the spikes alone fix: the presynaptic traces
        [K, B·N, S] and the own spikes filtered by the self kernel [K, N, S], or by each
        function of the self kernel's basis [K, A·N, S] (row a·N + i), so that fitted weights
        of the self kernel need no new filtering; None without a self kernel."""
        spikes = spikes.float()
        presynaptic = self.presynaptic_trace(spikes)
        basis, coupling = self.self_basis(), self.coupling_basis()
        if basis is not None and basis.shape == coupling.shape and torch.equal(basis, coupling):
            own = presynaptic  # the same filtering
        elif basis is not None:
            own = self.basis_filter(spikes, basis)
        else:
            ref = self.self_kernel()
            own = None if ref is None else self.causal_filter(spikes, ref)
        return presynaptic, own

    def own_input(self, own: torch.Tensor) -> torch.Tensor:
        r"""The self kernel's input [K, N, S] from :meth:`spike_traces`' own term: itself, or
        on a basis :math:`\sum_a v_{ia}\,(X_i * A_a)`."""
        weights = self.self_kernel_weights()
        if self.self_basis() is None or weights is None:
            return own
        n_trials, rows, steps = own.shape
        by_basis = own.view(n_trials, weights.shape[-1], rows // weights.shape[-1], steps)
        weights = weights.expand(by_basis.shape[2], -1) if weights.dim() == 1 else weights
        return torch.einsum("kans,na->kns", by_basis, weights)

    def input_from_spikes(
        self,
        data: Data | None,
        spikes: torch.Tensor,
        start: int = 0,
        coupling: torch.Tensor | None = None,
        self_scale: torch.Tensor | None = None,
        traces: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        r"""Inputs :math:`g(t)` for every step of a given raster (teacher forcing).

        With declared kernels all steps at once: the presynaptic traces, one sparse product
        with the edge weights, the self kernel, then the noise-free background and the
        stimulus. Otherwise the model's own :meth:`input` on every step's history window
        (:meth:`input_by_steps`). Differentiable in the model's parameters (not in ``W0``).

        Args:
            data: the network(s).
            spikes: [K, N, S] spike counts of steps ``start .. start+S-1``.
            start: time of the first column (stimulus time).
            coupling: dense weights [B·N, N] indexed [b·N + pre, post], used instead of the
                network's and differentiable (e.g. weights being fitted); ``data`` may then
                be None.
            self_scale: [N] factor on each neuron's self (refractory) kernel.
            traces: :meth:`spike_traces` of ``spikes``, when already computed.

        Returns:
            g [K, N, S]: column s is the input of step start+s given the steps before it
            (spikes before the raster count as silent).
        """
        n_trials, n, steps = spikes.shape
        if not self.declares_kernels:
            if coupling is not None or self_scale is not None:
                raise InputError(
                    f"{type(self).__name__}.input",
                    "overridden without declared "
                    "kernels, so its coupling and self kernel cannot be fitted",
                    "declared kernels (coupling_kernel, self_kernel) or a fit "
                    "with coupling fixed or none",
                )
            return self.input_by_steps(data, spikes, start)
        trace, own = self.spike_traces(spikes) if traces is None else traces
        own = None if own is None else self.own_input(own)
        if coupling is None:  # one sparse product per trial: no transposed copy of the traces
            sums = postsynaptic_sums(data.edge_index, self.basis_weights(data.W0.float()), n)
            synaptic = torch.stack([sums @ part for part in trace])
        else:
            synaptic = (trace.transpose(-1, -2) @ coupling).transpose(-1, -2)
        r = self.recurrence()
        r = r.unsqueeze(-1) if r.dim() else r  # a per-neuron r scales the neuron's row
        if own is None:
            g = synaptic * r
        elif self_scale is None:
            g = torch.addcmul(own, synaptic, r)
        else:
            g = torch.addcmul(synaptic * r, self_scale.unsqueeze(-1), own)
        drive = self.background_input((n_trials, steps, n), noise=False)
        if self.stimulus is not None:
            times = torch.arange(start, start + steps, device=spikes.device)
            drive = drive + self.stimulus_block(times, n)
        if drive.dim() == 0 and not drive.requires_grad and float(drive) == 0:
            return g  # no background or stimulus: skip adding zeros to every input
        return g + drive.expand(n_trials, steps, n).transpose(-1, -2)

    def input_by_steps(self, data: Data, spikes: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Teacher forcing through the model's own :meth:`input`: g [K, N, S] from the state
        window [N, T] of the recorded history before every step (silent before the raster),
        one call per trial and step."""
        n = spikes.shape[1]
        W, edge_index = self.connectivity_filter(data.W0.float(), data.edge_index, n)
        window = W.shape[1]
        history = torch.nn.functional.pad(spikes.float(), (window, 0))
        return torch.stack(
            [
                torch.stack(
                    [
                        self.input(edge_index, W, trial[:, step : step + window], t=start + step)
                        for step in range(spikes.shape[2])
                    ],
                    dim=-1,
                )
                for trial in history
            ]
        )

    def expected_spikes(self, input: torch.Tensor) -> torch.Tensor:
        """Expected spike count per step given the noise-free input: the emission's
        :meth:`~spikefit.models.emissions.Emission.mean` of the non-linearity (for GLMs and
        LNPs the non-linearity itself, the probability or the mean count)."""
        emission = self.effective_emission
        rates = self.non_linearity(input)
        return rates if emission is None else emission.mean(self, rates)

    def forward(
        self, edge_index: torch.Tensor, W: torch.Tensor, state: torch.Tensor, t: int = -1
    ) -> torch.Tensor:
        """Spikes at time t+1 from the ``state`` window [N, T] ending at time t."""
        return self.emit_spikes(self.non_linearity(self.input(edge_index, W, state, t)))

    # ------------------------------------------------------------------ stimulus
    def add_stimulus(self, stimulus: Callable) -> None:
        """Adds an external input E(t); an ``nn.Module`` becomes submodule ``stimulus``."""
        if not callable(stimulus):
            raise TypeError(
                f"the stimulus must be callable (a function of the time step), "
                f"got {type(stimulus).__name__}"
            )
        self._modules.pop("stimulus", None)
        self.__dict__.pop("stimulus", None)
        self.stimulus = stimulus

    def stimulus_input(self, t: int | torch.Tensor) -> torch.Tensor:
        """E(t) for the current network batch: [N], or [N, len(t)] for a tensor of times."""
        if self.stimulus is None:
            return torch.zeros((), device=self.dt.device)
        return torch.as_tensor(self.stimulus(t), dtype=torch.float32, device=self.dt.device)

    def stimulus_block(self, times: torch.Tensor, n_neurons: int) -> torch.Tensor:
        """E at every time in ``times`` [L] as [L, N] (zero without a stimulus)."""
        if self.stimulus is None:
            return torch.zeros(len(times), n_neurons, device=times.device)
        values = self.stimulus_input(times)
        if values.shape == (n_neurons, len(times)):
            return values.t()
        return torch.stack([self.stimulus_input(int(t)).expand(n_neurons) for t in times])

    # ------------------------------------------------------------------ simulation
    fast_blocks = staticmethod(history_blocks)
    reference_blocks = staticmethod(reference_history_blocks)

    def generator(self, device: torch.device, seed: int | None = None) -> torch.Generator:
        """The model's generator on ``device``, reseeded when ``seed`` is given."""
        if self._rng.device != torch.device(device):
            self._rng = torch.Generator(device=device).manual_seed(self._rng.initial_seed())
        if seed is not None:
            self._rng.manual_seed(seed)
        return self._rng

    def simulate(
        self,
        data: Data,
        n_steps: int,
        seed: int | None = None,
        equilibration_steps: int = 100,
        store_as_dtype: torch.dtype = torch.uint8,
        n_trials: int = 1,
        verbose: bool = True,
        engine: str = "fast",
        as_events: bool = False,
    ) -> torch.Tensor | SpikeEvents:
        """Simulates ``n_steps`` steps of the network(s) in ``data``.

        Args:
            data: a network or a PyG batch of networks (``edge_index``, ``W0``, ``num_nodes``).
            n_steps: recorded steps; column k received stimulus E(k).
            seed: seeds the model's generator (same seed, same spikes on the same device).
            equilibration_steps: steps run first (at times < 0) and not returned.
            store_as_dtype: dtype of the returned raster.
            n_trials: independent trials, simulated together as a batch dimension.
            verbose: progress bar.
            engine: ``"fast"`` (the declared kernels, sparse spikes; a model without them
                runs the reference path) or ``"reference"`` (the per-step :meth:`forward`
                on a state window, as the seed simulator).
            as_events: return :class:`SpikeEvents` (spike times) instead of the dense raster,
                so long runs never hold the raster in memory.

        Returns:
            spikes [N, n_steps] (or [N, n_steps, n_trials]) or :class:`SpikeEvents`.
        """
        if engine not in ("fast", "reference"):
            raise ValueError(f"engine must be 'fast' or 'reference', got {engine!r}")
        if n_steps < 1 or n_trials < 1 or equilibration_steps < 0:
            raise ValueError("n_steps and n_trials must be ≥ 1 and equilibration_steps ≥ 0")
        check_graph(data.edge_index, data.W0, data.num_nodes)
        self.check_stimulus(data.num_nodes)
        fast = engine == "fast" and self.declares_kernels
        with torch.no_grad():
            run = self.fast_blocks if fast else self.reference_blocks
            blocks = run(
                self,
                data,
                n_steps,
                generator=self.generator(data.W0.device, seed),
                n_trials=n_trials,
                equilibration_steps=equilibration_steps,
                verbose=verbose,
            )
            result = collect(
                blocks, data.num_nodes, n_steps, n_trials, store_as_dtype, as_events, float(self.dt)
            )
        if getattr(self.stimulus, "n_batches", 1) > 1:
            self.stimulus.next_batch()
        return result

    def check_stimulus(self, num_nodes: int) -> None:
        """Raises if the stimulus's current batch does not have ``num_nodes`` neurons."""
        n = getattr(self.stimulus, "n_neurons", None)
        if n is not None and int(n) != num_nodes:
            raise InputError(
                field_name(self.stimulus, "stimulus_masks"),
                f"the stimulus's batch {self.stimulus.current_batch} covers {int(n)} neurons "
                f"but the network batch has {num_nodes}",
                "one mask per network and the same batch_size as the DataLoader",
            )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Saves the state dict (parameters, buffers, stimulus) to ``path``."""
        torch.save(self.state_dict(), path)

    def load(self, path: str | Path) -> None:
        """Loads a state dict saved by :meth:`save` (tensors only, no code runs)."""
        state = load_file(
            Path(path), f"a state dict saved by {type(self).__name__}.save", self.dt.device
        )
        if not isinstance(state, dict):
            raise InputError(
                str(path),
                f"holds a {type(state).__name__}",
                f"a state dict saved by {type(self).__name__}.save",
            )
        for name, parameter in self.named_parameters():
            if name in state and parameter.shape != state[name].shape:
                parameter.data = torch.empty_like(state[name])  # e.g. a fitted per-neuron value
        self.load_state_dict(state)


def check_graph(edge_index: torch.Tensor, W0: torch.Tensor, num_nodes: int | None) -> None:
    """Raises an InputError for an ill-shaped graph, non-finite weights or self-loops."""
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise InputError(
            "edge_index",
            f"shape {list(edge_index.shape)} is not [2, E]",
            "[2, E]: presynaptic neurons in row 0, postsynaptic in row 1",
        )
    if W0.dim() not in (1, 2) or W0.shape[0] != edge_index.shape[1]:
        raise InputError(
            "W0",
            f"shape {list(W0.shape)} does not match {edge_index.shape[1]} edges",
            f"[E] = [{edge_index.shape[1]}], one weight per edge (or "
            f"[E, B], one per basis function)",
        )
    if not torch.isfinite(W0).all():
        raise InputError("W0", "holds NaN or infinite weights", "finite weights")
    if num_nodes is not None and edge_index.numel() and int(edge_index.max()) >= num_nodes:
        raise InputError(
            "edge_index",
            f"refers to neuron {int(edge_index.max())} of a {num_nodes}-neuron graph",
            f"neurons 0 … {num_nodes - 1}",
        )
    if (edge_index[0] == edge_index[1]).any():
        raise InputError(
            "edge_index",
            "the graph has self-loops (edges i→i)",
            "no self-loops: self-coupling is the model's refractory kernel, so "
            "drop the diagonal of W0",
        )
