"""Maximum-likelihood fits of spiking network models to recorded spikes."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import nn
from torch_geometric.data import Data
from torchmetrics import SumMetric
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_roc,
)
from torchmetrics.functional.regression import pearson_corrcoef

from spikefit.checks import InputError, one_of
from spikefit.data.spike_trains import Chunk, SpikeTrainDataModule
from spikefit.datasets import graph_to_dense
from spikefit.models import BaseModel
from spikefit.tasks.calibration import DEFAULT_MODEL
from spikefit.tasks.checkpoints import match_state, stamp
from spikefit.tasks.design import LinearDesign
from spikefit.tasks.observation import Observations, at_spikes, observations_of
from spikefit.tasks.regularizers import L1, Regularizer
from spikefit.tasks.solvers import LBFGS, NewtonSystem, Solver

COUPLINGS = ("dense", "graph", "fixed", "none")
SPLITS = ("train", "heldout")
SUMS = ("log_likelihood", "baseline", "spikes", "bins")


class LikelihoodFit(L.LightningModule):
    r"""Fits ``model`` to recorded spikes X [N, T] by maximum likelihood.

    .. math::
        \log p(X) = \sum_t \sum_i \log P\big(X_i(t) \mid \mu_i(t)\big), \qquad
        \mu = \mathrm{non\_linearity}(g)

    where :math:`g(t)` is computed from the *recorded* history (teacher forcing), so all bins
    are evaluated in parallel, in the data module's time chunks:

    .. math::
        g_i(t) = r \sum_j W_{ji} (X_j * c)(t) + s_i (X_i * \mathrm{ref}_i)(t) + b_i
                 + \mathcal{E}_i(t)

    (for synaptic-activation models :math:`X * c` is the activation s(t-1)). The objective is
    the mean negative log-likelihood per neuron and bin, plus the ``regularizer`` on W.
    Bernoulli (BernoulliGLM) or Poisson (PoissonGLM, RectifiedLNP, RectifiedSAM) emission.

    Args:
        model: the spiking network model; its parameters are the starting point.
        fit: names of model parameters to fit (shared scalars), e.g. ``["theta"]``.
        per_neuron: names of model parameters to fit with one value per neuron (thresholds,
            biases, gains of the non-linearity), e.g. ``["theta"]`` or ``["b"]``.
        coupling: the coupling weights W: ``"dense"`` fits all N(N-1) pairs, ``"graph"`` the
            edges of the data's network, both from 0; ``"fixed"`` keeps the network's
            weights, ``"none"`` leaves the neurons uncoupled.
        refractory_scale: fit a factor :math:`s_i` per neuron on the model's self
            (refractory) kernel, whose shape stays fixed.
        observation: emission distribution (default: the one the model emits from).
        regularizer: penalty on the fitted coupling weights (L1 or L2).
        solver: :class:`~spikefit.tasks.solvers.LBFGS` (full batch, the default),
            :class:`~spikefit.tasks.solvers.Newton` (full batch, per-neuron blocks: the
            coupling, refractory scales and per-neuron offsets such as θ or b) or
            :class:`~spikefit.tasks.solvers.Adam` (time chunks).
    """

    def __init__(self, model: BaseModel = DEFAULT_MODEL, fit: list[str] | None = None,
                 per_neuron: list[str] | None = None, coupling: str = "dense",
                 refractory_scale: bool = False, observation: Observations | None = None,
                 regularizer: Regularizer | None = None,
                 solver: Solver | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "observation", "regularizer", "solver"])
        self.automatic_optimization = False
        fit, per_neuron = list(fit or []), list(per_neuron or [])
        owner = self.owner = type(self).__name__
        one_of(f"{owner}.coupling", coupling, COUPLINGS)
        available = model.tunable_parameters
        for field, names in (("fit", fit), ("per_neuron", per_neuron)):
            unknown = [name for name in names if name not in available]
            if unknown:
                raise InputError(f"{owner}.{field}", f"{unknown} are not parameters of "
                                 f"{type(model).__name__}", f"names among {sorted(available)}")
        self.fitted = list(dict.fromkeys(fit + per_neuron))
        self.fits_coupling = coupling in ("dense", "graph")
        if self.fits_coupling and "r" in self.fitted:
            raise InputError(f"{owner}.fit", f"r scales the coupling weights that coupling="
                             f"{coupling!r} fits (only r·W is identifiable)",
                             "either r or the coupling, not both")
        if refractory_scale and model.self_kernel() is None:
            raise InputError(f"{owner}.refractory_scale", f"{type(model).__name__} has no self "
                             "(refractory) kernel to scale", "false for this model")
        if not (self.fitted or self.fits_coupling or refractory_scale):
            raise InputError(f"{owner}.fit", "nothing to fit", "parameters in fit or "
                             "per_neuron, coupling 'dense' or 'graph', or refractory_scale")
        self.observation = observation if observation is not None else observations_of(
            model, f"{owner}.model")
        self.model = model
        self.model.requires_grad_(False)
        self.regularizer = regularizer
        self.solver = solver if solver is not None else LBFGS()
        self.sums = nn.ModuleList([nn.ModuleDict({key: SumMetric() for key in SUMS})
                                   for _ in SPLITS])
        self.n_neurons = 0
        self.refractory_scale: nn.Parameter | None = None
        self.results: dict = {}
        self.converged = False
        self.started = time.perf_counter()

    # ------------------------------------------------------------------ set-up
    @property
    def history_bins(self) -> int:
        """Bins of history a bin's input depends on (the model's memory)."""
        return self.model.memory_steps

    def setup(self, stage: str) -> None:
        if self.n_neurons:
            return
        data = getattr(self.trainer, "datamodule", None)
        if not isinstance(data, SpikeTrainDataModule):
            raise InputError("data", f"{type(data).__name__} is not a SpikeTrainDataModule",
                             "data.class_path: spikefit.data.SpikeTrainDataModule")
        if not math.isclose(data.dt_ms, float(self.model.dt), rel_tol=1e-6):
            raise InputError(f"{type(data).__name__}.dt_ms", f"{data.dt_ms:g} ms differs from "
                             f"the model's dt, {float(self.model.dt):g} ms",
                             "the recording binned at the model's step")
        if self.solver.full_batch and data.hparams.chunks_per_batch is not None:
            raise InputError(f"{type(data).__name__}.chunks_per_batch", f"solver "
                             f"{type(self.solver).__name__} steps on every training bin at "
                             "once", "null (or solver Adam)")
        self.observation.check(data.spikes, f"{type(data).__name__}.path")
        n = self.n_neurons = data.n_neurons
        for name in self.hparams.per_neuron or []:
            self._expand(name, n)
        for name in self.fitted:
            self.model.get_parameter(name).requires_grad_(True)
        if self.hparams.refractory_scale:
            self.refractory_scale = nn.Parameter(torch.ones(n))
        self._build_coupling(self.hparams.coupling, data.network, n)
        self.register_buffer("baseline_rates", data.train_rates.clone())
        true_W0 = None if data.network is None else graph_to_dense(data.network).float()
        self.register_buffer("true_W0", true_W0)
        self._probe()
        if self.solver.needs_blocks:
            self._check_blocks()

    def _expand(self, name: str, n: int) -> None:
        """Replaces model parameter ``name`` by one value per neuron [N]."""
        owner_name, _, leaf = name.rpartition(".")
        owner = self.model.get_submodule(owner_name)
        value = getattr(owner, leaf).detach()
        if value.dim() == 0:
            value = value.expand(n)
        if value.shape != (n,):
            raise InputError(f"{self.owner}.per_neuron", f"'{name}' has shape "
                             f"{list(value.shape)}", f"a scalar or one value per neuron [{n}]")
        setattr(owner, leaf, nn.Parameter(value.clone()))

    def _build_coupling(self, coupling: str, network: Data | None, n: int) -> None:
        """``edge_index`` [2, E] of the coupled pairs and their ``coupling_weights`` [E]: a
        parameter (from 0) when fitted, else a buffer."""
        if coupling in ("graph", "fixed") and network is None:
            raise InputError(f"{self.owner}.coupling", f"{coupling!r} needs the network",
                             "data.network: a [N, N] connectivity matrix, or coupling dense")
        if coupling == "dense":
            edge_index = (~torch.eye(n, dtype=torch.bool)).nonzero().t()
        elif coupling == "none":
            edge_index = torch.zeros(2, 0, dtype=torch.long)
        else:
            edge_index = network.edge_index
        self.register_buffer("edge_index", edge_index.clone())
        if self.fits_coupling:
            self.coupling_weights = nn.Parameter(torch.zeros(edge_index.shape[1]))
        else:
            weights = network.W0 if coupling == "fixed" else torch.zeros(0)
            self.register_buffer("coupling_weights", weights.float().clone())

    def silence(self, bins: int) -> Chunk:
        """A chunk of ``bins`` silent bins of every neuron (no history), for probing."""
        return {"spikes": torch.zeros(self.n_neurons, bins), "start": 0, "bins": bins}

    def _probe(self) -> None:
        """Evaluates the input once on silence, so that parameters that cannot be one per
        neuron fail here, with their names."""
        bins = self.history_bins + 2 + (self.history_bins + 2 == self.n_neurons)
        try:
            rates = self.model.non_linearity(self.chunk_input(self.silence(bins)))
        except RuntimeError as error:
            raise InputError(f"{self.owner}.per_neuron", f"{self.hparams.per_neuron} cannot all "
                             f"be one value per neuron in {type(self.model).__name__} "
                             f"({error})", "parameters that act on each neuron alone") from None
        if rates.shape != (bins, self.n_neurons):
            raise InputError(f"{self.owner}.per_neuron", f"{self.hparams.per_neuron} give rates "
                             f"of shape {list(rates.shape)}",
                             f"[bins, N] = {[bins, self.n_neurons]}")

    def _check_blocks(self) -> None:
        """Raises unless every fitted quantity belongs to one neuron and moves its input
        linearly (what Newton's per-neuron blocks need); finds the offsets' signs."""
        name = type(self.solver).__name__
        shared = [p for p in self.fitted if p not in (self.hparams.per_neuron or [])]
        if shared:
            raise InputError(f"{self.owner}.fit", f"solver {name} fits per-neuron blocks, and "
                             f"{shared} would be shared by all neurons",
                             "them in per_neuron, or solver LBFGS")
        if isinstance(self.regularizer, L1):
            raise InputError(f"{self.owner}.regularizer", f"solver {name} needs a smooth "
                             "objective, and L1 has no second derivative at 0",
                             "L2, or solver Adam for L1")
        self.offset_signs = [self._offset_sign(p) for p in self.fitted]

    def _offset_sign(self, name: str) -> float:
        """+1 or -1 when per-neuron parameter ``name`` shifts the argument of the
        non-linearity like the input does (b) or against it (θ); raises otherwise."""
        parameter, bins = self.model.get_parameter(name), 7
        shift = torch.linspace(-3, 3, bins * self.n_neurons).view(bins, -1).requires_grad_()
        rates = self.model.non_linearity(self.chunk_input(self.silence(bins)) + shift)
        weights = torch.rand(rates.shape, generator=torch.Generator().manual_seed(0))
        by_input, by_parameter = torch.autograd.grad((rates * weights).sum(), [shift, parameter],
                                                     materialize_grads=True)
        for sign in (1.0, -1.0):
            if torch.allclose(by_parameter, sign * by_input.sum(0), rtol=1e-4, atol=1e-7):
                return sign
        raise InputError(f"{self.owner}.per_neuron", f"solver {type(self.solver).__name__} "
                         f"needs offsets, and '{name}' does not shift the input of the "
                         f"non-linearity (as θ or b do)", "solver LBFGS for it")

    # ------------------------------------------------------------------ the likelihood
    def coupling_matrix(self) -> torch.Tensor:
        """Coupling weights as a dense [N, N] matrix indexed [pre, post]."""
        dense = torch.zeros(self.n_neurons, self.n_neurons, device=self.coupling_weights.device)
        return dense.index_put(tuple(self.edge_index), self.coupling_weights)

    def chunk_input(self, chunk: Chunk, traces: tuple | None = None) -> torch.Tensor:
        """Input g [S, N] of the chunk's last S bins given the recorded history; ``traces``
        are the chunk's :meth:`~spikefit.models.BaseModel.spike_traces`, if known."""
        spikes, bins = chunk["spikes"].unsqueeze(0), chunk["bins"]
        if traces is None:
            traces = self.model.spike_traces(spikes)
        traces = tuple(None if t is None else t[..., -bins:] for t in traces)
        if self.fits_coupling:
            network, dense = None, self.coupling_matrix()
        else:
            network = Data(edge_index=self.edge_index, W0=self.coupling_weights,
                           num_nodes=self.n_neurons)
            dense = None
        first = chunk["start"] + spikes.shape[-1] - bins
        g = self.model.input_from_spikes(network, spikes[..., -bins:], start=first,
                                         coupling=dense, self_scale=self.refractory_scale,
                                         traces=traces)
        return g[0].t()

    def chunk_log_likelihood(self, chunk: Chunk, traces: tuple | None = None,
                             targets: torch.Tensor | None = None) -> torch.Tensor:
        """Total log-likelihood (nats) of the chunk's last S bins; ``targets`` are their
        counts [S, N] (e.g. sparse), if already extracted."""
        if targets is None:
            targets = chunk["spikes"][:, -chunk["bins"]:].t()
        input = self.chunk_input(chunk, traces)
        return self.observation.model_log_likelihood(self.model, targets, input)

    def penalty(self) -> torch.Tensor | float:
        """The regularizer on the fitted coupling weights (0 without)."""
        if self.regularizer is None or not self.fits_coupling:
            return 0.0
        return self.regularizer(self.coupling_weights)

    # ------------------------------------------------------------------ training
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.solver.build([p for p in self.parameters() if p.requires_grad])

    def training_step(self, batch: list[Chunk], batch_idx: int) -> None:
        """One solver step on the batch's chunks. The objective is the mean negative
        log-likelihood per neuron-bin over the chunks of all processes (plus the penalty);
        each chunk is evaluated and back-propagated on its own, so the autograd graph stays
        within one chunk (the kept spike traces take twice the batch's raster)."""
        optimizer = self.optimizers()
        strategy = self.trainer.strategy
        local = sum(chunk["bins"] * chunk["weight"] for chunk in batch) * self.n_neurons
        size = strategy.reduce(torch.tensor(float(local), device=self.device), reduce_op="sum")
        scale = self.trainer.world_size / size  # gradients are averaged over processes

        cache: dict[int, tuple] = {}

        def prepared(k: int) -> tuple:
            """Chunk k's spike traces and its (sparse) target counts, kept for the step's
            later evaluations: the traces time-major, as the products read them, unless they
            depend on fitted (kernel) parameters."""
            if k not in cache:
                chunk = batch[k]
                traces = self.model.spike_traces(chunk["spikes"].unsqueeze(0))
                fixed = not any(t is not None and t.requires_grad for t in traces)
                targets = chunk["spikes"][:, -chunk["bins"]:].t().to_sparse().coalesce()
                cache[k] = (tuple(None if t is None else time_major(t) for t in traces)
                            if fixed else None), targets
            return cache[k]

        def evaluate(backward: bool) -> torch.Tensor:
            """The objective over all processes; with its gradient when ``backward``."""
            total = torch.zeros((), device=self.device)
            for k, chunk in enumerate(batch):
                traces, targets = prepared(k)
                weight = chunk["weight"] * scale
                with torch.set_grad_enabled(backward):
                    link = self.observation.link(self.model, self.chunk_input(chunk, traces))
                    penalty = torch.as_tensor(self.penalty() if k == 0 else 0.0,
                                              device=self.device)
                nll = -self.observation.log_likelihood_of_link(targets, link.detach())
                total += weight * nll + penalty.detach()
                if backward:  # a surrogate with the objective's gradient, from the exact
                    by_link = self.link_derivatives(targets, link)[0]  # derivatives in m
                    self.manual_backward((link * by_link).sum() * weight + penalty)
            objective = strategy.reduce(total, reduce_op="mean")
            if not torch.isfinite(objective):
                raise InputError(
                    f"{self.owner}.model", f"the negative log-likelihood became "
                    f"{objective.item()} at step {self.global_step}", "finite rates: other "
                    "starting parameters, a larger observation floor or a lower lr")
            return objective

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            return evaluate(backward=True)

        system = (self.newton_system(batch, prepared, scale, lambda: evaluate(backward=False))
                  if self.solver.needs_blocks else None)
        objective, self.converged = self.solver.step(optimizer, closure, system)
        self.log("train/objective", objective, prog_bar=True, batch_size=1)
        for name in self.fitted:
            self.log(f"param/{name}", self.model.get_parameter(name).mean(), batch_size=1)
        if self.converged:
            self.trainer.should_stop = True

    def newton_system(self, batch: list[Chunk], prepared: Callable[[int], tuple],
                      scale: torch.Tensor, objective: Callable[[], torch.Tensor]
                      ) -> NewtonSystem:
        """The ``objective`` of :meth:`training_step` in per-neuron blocks: neuron i's block
        is its incoming coupling weights, its refractory scale and its offsets, in that order
        (:class:`~spikefit.tasks.design.LinearDesign`)."""
        strategy = self.trainer.strategy
        designs: dict[int, LinearDesign] = {}

        def design(k: int) -> LinearDesign:
            if k not in designs:
                bins = batch[k]["bins"]
                presynaptic, own = (None if t is None else t[0, :, -bins:].t()
                                    for t in prepared(k)[0])
                designs[k] = LinearDesign(
                    presynaptic if self.fits_coupling else None,
                    own if self.refractory_scale is not None else None,
                    self.offset_signs, self.model.recurrence().detach(),
                    self.solver.max_pairs)
            return designs[k]

        def blocks() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            total, gradient, hessian = 0.0, 0.0, 0.0
            for k, chunk in enumerate(batch):
                traces, targets = prepared(k)
                weight = chunk["weight"] * scale
                with torch.no_grad():
                    input = self.chunk_input(chunk, traces)
                input.requires_grad_()
                link = self.observation.link(self.model, input)
                slope, = torch.autograd.grad(link.sum(), input, create_graph=True)
                curvature, = torch.autograd.grad(slope.sum(), input, materialize_grads=True)
                link, slope = link.detach(), slope.detach()
                first, index, second = self.link_derivatives(targets, link)
                d = weight * first * slope  # derivatives of the objective in g
                w = weight * first * curvature
                w[index] += weight * second * slope[index].square()
                g, h = design(k).blocks(d, w)
                nll = -weight * self.observation.log_likelihood_of_link(targets, link)
                total, gradient, hessian = total + nll, gradient + g, hessian + h
            penalty_gradient, penalty_curvature = self.penalty_derivatives()
            if penalty_gradient is not None:
                pre, post = self.edge_index
                gradient[post, pre] += penalty_gradient
                hessian[post, pre, pre] += penalty_curvature
                total = total + self.penalty().detach()
            free = self.block_mask()
            gradient = gradient * free
            hessian = torch.where(free.unsqueeze(1) & free.unsqueeze(2), hessian,
                                  torch.eye(free.shape[1], device=hessian.device))
            return tuple(strategy.reduce(x, reduce_op="mean") for x in (total, gradient,
                                                                         hessian))

        def to_parameters(step: torch.Tensor) -> list[torch.Tensor]:
            by_parameter, first = {}, 0
            if self.fits_coupling:
                pre, post = self.edge_index
                by_parameter[self.coupling_weights] = step[post, pre]
                first = self.n_neurons
            if self.refractory_scale is not None:
                by_parameter[self.refractory_scale] = step[:, first]
                first += 1
            for k, name in enumerate(self.fitted):
                by_parameter[self.model.get_parameter(name)] = step[:, first + k]
            return [by_parameter[p] for p in self.trainer.optimizers[0].param_groups[0]["params"]]

        return NewtonSystem(blocks, objective, to_parameters)

    def link_derivatives(self, targets: torch.Tensor, link: torch.Tensor
                         ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor],
                                    torch.Tensor]:
        """Derivatives of the negative log-likelihood in the link output m [S, N] of a chunk
        with sparse ``targets``: the first everywhere (1 where no spike, as log P(0 | m) = -m
        for both distributions), the spikes' index and the second there (0 elsewhere)."""
        counts, fired = at_spikes(targets, link.detach())
        first, second = self.observation.spike_link_derivatives(counts, fired)
        index = tuple(targets.indices())
        gradient = torch.ones_like(link, requires_grad=False)
        gradient[index] = -first
        return gradient, index, -second

    def block_mask(self) -> torch.Tensor:
        """[N, P]: which entries of each neuron's block are fitted (not the absent coupling
        weights, e.g. the self-coupling)."""
        n = self.n_neurons
        width = (n if self.fits_coupling else 0) + (self.refractory_scale is not None) + len(
            self.fitted)
        free = torch.ones(n, width, dtype=torch.bool, device=self.device)
        if self.fits_coupling:
            coupled = torch.zeros(n, n, dtype=torch.bool, device=self.device)
            coupled[self.edge_index[1], self.edge_index[0]] = True
            free[:, :n] = coupled
        return free

    def penalty_derivatives(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """First and second derivatives of the (separable) penalty in each coupling weight."""
        if self.regularizer is None or not self.fits_coupling:
            return None, None
        weights = self.coupling_weights.detach().requires_grad_()
        first, = torch.autograd.grad(self.regularizer(weights), weights, create_graph=True)
        second, = torch.autograd.grad(first.sum(), weights, materialize_grads=True)
        return first.detach(), second

    # ------------------------------------------------------------------ evaluation
    def validation_step(self, batch: list[Chunk], batch_idx: int,
                        dataloader_idx: int = 0) -> None:
        sums = self.sums[dataloader_idx]
        for chunk in batch:
            spikes = chunk["spikes"][:, -chunk["bins"]:].t()
            weight = chunk["weight"]
            baseline = self.baseline_rates.expand_as(spikes)
            sums["log_likelihood"].update(self.chunk_log_likelihood(chunk) * weight)
            sums["baseline"].update(self.observation.log_likelihood(spikes, baseline) * weight)
            sums["spikes"].update(spikes.sum() * weight)
            sums["bins"].update(spikes.numel() * weight)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            for sums in self.sums:
                for metric in sums.values():
                    metric.reset()
            return
        for split, sums in zip(SPLITS, self.sums, strict=True):
            if not sums["bins"].update_called:
                continue
            total = {key: float(metric.compute()) for key, metric in sums.items()}
            for metric in sums.values():
                metric.reset()
            per_bin = total["log_likelihood"] / total["bins"]
            bits = (total["log_likelihood"] - total["baseline"]) / (total["spikes"] * math.log(2))
            self.results.setdefault("log_likelihood_per_bin", {})[split] = per_bin
            self.results.setdefault("bits_per_spike", {})[split] = bits
            self.log(f"{split}/log_likelihood_per_bin", per_bin, sync_dist=True)
            self.log(f"{split}/bits_per_spike", bits, sync_dist=True)
        self.results["metrics_at_step"] = self.global_step
        for name, value in self.edge_metrics().items():
            self.results[name] = value
            self.log(f"edges/{name}", value, sync_dist=True)

    def edge_metrics(self) -> dict[str, float]:
        """Against the true network: AUROC and average precision of |W| for detecting its
        edges among all N(N-1) pairs (coupling="dense"), and the Pearson correlation of the
        fitted with the true weights (on all pairs, or on the graph's edges)."""
        if self.true_W0 is None or not self.fits_coupling:
            return {}
        fitted, truth = self._compared_weights()
        metrics = {"weight_correlation": float(pearson_corrcoef(fitted, truth))}
        labels = (truth != 0).long()
        if self.hparams.coupling == "dense" and 0 < int(labels.sum()) < len(labels):
            metrics["edge_auroc"] = float(binary_auroc(fitted.abs(), labels))
            metrics["edge_average_precision"] = float(
                binary_average_precision(fitted.abs(), labels))
        return metrics

    def _compared_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Fitted and true weights [E] of the fitted pairs."""
        pre, post = self.edge_index
        return self.coupling_weights.detach(), self.true_W0[pre, post]

    # ------------------------------------------------------------------ report
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        stamp(checkpoint, self)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        match_state(self, checkpoint)

    def on_fit_start(self) -> None:
        self.started = time.perf_counter()

    def summary(self) -> dict:
        """What the fit achieved, as written to ``summary.json``: log-likelihoods in nats per
        neuron per bin and the metrics of the last validation (at ``metrics_at_step``, of
        ``steps`` solver steps; validate every epoch to have them at the end)."""
        parameters = {name: self.model.get_parameter(name).tolist() for name in self.fitted}
        if self.refractory_scale is not None:
            parameters["refractory_scale"] = self.refractory_scale.tolist()
        return {
            "task": "likelihood",
            "model": type(self.model).__name__,
            "observation": self.observation.name,
            "solver": type(self.solver).__name__,
            "coupling": self.hparams.coupling,
            "n_neurons": self.n_neurons,
            "log_likelihood_per_bin": self.results.get("log_likelihood_per_bin", {}),
            "bits_per_spike": self.results.get("bits_per_spike", {}),
            "parameters": parameters,
            **{key: value for key, value in self.results.items()
               if key not in ("log_likelihood_per_bin", "bits_per_spike")},
            "converged": self.converged,
            "steps": self.global_step,
            "wall_time_s": time.perf_counter() - self.started,
        }

    def on_fit_end(self) -> None:
        log_dir = Path(self.trainer.log_dir or ".")  # a collective under DDP: every rank
        if not self.trainer.is_global_zero:
            return
        summary = self.summary()
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        np.save(log_dir / "fitted_W0.npy", self.coupling_matrix().detach().cpu().numpy())
        if self.true_W0 is not None and self.fits_coupling:
            self.plot_coupling().savefig(log_dir / "coupling.png", dpi=120, bbox_inches="tight")
        print(self.describe(summary) + f"\nsummary: {log_dir / 'summary.json'}")

    @staticmethod
    def describe(summary: dict) -> str:
        """A short human summary of ``summary``."""
        ll, bits = summary["log_likelihood_per_bin"], summary["bits_per_spike"]
        lines = [f"\nspikefit likelihood fit of {summary['model']} ({summary['observation']}, "
                 f"{summary['solver']}, coupling {summary['coupling']}) on "
                 f"{summary['n_neurons']} neurons: "
                 f"{'converged' if summary['converged'] else 'stopped'} after "
                 f"{summary['wall_time_s']:.1f} s"]
        for split in SPLITS:
            if split in ll:
                lines.append(f"  {split}: log-likelihood {ll[split]:.6f} nats/neuron/bin, "
                             f"{bits[split]:.4f} bits/spike over the homogeneous baseline")
        for name, value in summary["parameters"].items():
            values = np.atleast_1d(np.asarray(value))
            spread = f" ± {values.std():.4g} over {values.size}" if values.size > 1 else ""
            lines.append(f"  {name} = {values.mean():.4g}{spread}")
        for name in ("edge_auroc", "edge_average_precision", "weight_correlation"):
            if name in summary:
                lines.append(f"  {name.replace('_', ' ')}: {summary[name]:.4f}")
        return "\n".join(lines)

    def plot_coupling(self):
        """Figure: fitted against true weights, and the ROC curve of |W| for edge detection."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fitted, truth = (w.cpu() for w in self._compared_weights())
        figure, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
        left.scatter(truth, fitted, s=4, alpha=0.5)
        low, high = float(min(truth.min(), fitted.min())), float(max(truth.max(), fitted.max()))
        left.plot([low, high], [low, high], color="grey", lw=0.8)
        left.set(xlabel="true weight", ylabel="fitted weight",
                 title=f"all {len(truth):,} fitted pairs of {self.n_neurons} neurons: "
                       f"correlation {self.results.get('weight_correlation', math.nan):.3f}")
        labels = (truth != 0).long()
        if "edge_auroc" in self.results:
            fpr, tpr, _ = binary_roc(fitted.abs(), labels)
            right.plot(fpr, tpr)
            right.set_title(f"detecting the {int(labels.sum()):,} true edges by |W|: AUROC "
                            f"{self.results['edge_auroc']:.3f}")
        right.plot([0, 1], [0, 1], color="grey", lw=0.8)
        right.set(xlabel="false positive rate", ylabel="true positive rate")
        figure.tight_layout()
        return figure


def time_major(trace: torch.Tensor) -> torch.Tensor:
    """``trace`` [K, N, S] stored with the neurons of a step next to each other."""
    return trace.transpose(-1, -2).contiguous().transpose(-1, -2)
