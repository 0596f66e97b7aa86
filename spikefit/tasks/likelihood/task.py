"""Maximum-likelihood fits of spiking network models to recorded spikes."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import lightning as L
import numpy as np
import torch
from torch import nn
from torch_geometric.data import Data
from torchmetrics import SumMetric
from tqdm.auto import tqdm
from typing_extensions import override

from spikefit.checks import InputError, in_range, non_negative, one_of, whole
from spikefit.data.spike_trains import Chunk, SpikeTrainDataModule
from spikefit.datasets import graph_to_dense
from spikefit.models import BaseModel, SAModel
from spikefit.models.emissions import Emission
from spikefit.tasks.callbacks import (
    WriteConnections,
    WriteCouplingMatrix,
    WriteFigures,
    WriteFilters,
    WriteFittedModel,
    WriteSummary,
)
from spikefit.tasks.checkpoints import match_state, stamp
from spikefit.tasks.defaults import DEFAULT_MODEL, own_model
from spikefit.tasks.likelihood import (
    cross_validation,
    newton,
    parameters,
    predictive,
    uncertainty,
)
from spikefit.tasks.likelihood.filters import (
    coupling_filters_figure,
    covariate_filters_figure,
    fitted_filters,
    post_spike_figure,
)
from spikefit.tasks.likelihood.metrics import (
    SUMS,
    connections_figure,
    coupling_figure,
    edge_metrics,
    likelihood_metrics,
)
from spikefit.tasks.likelihood.objective import (
    Prepared,
    StepCache,
    forced_input,
    surrogate,
    targets_of,
)
from spikefit.tasks.parameters import expand_per_neuron
from spikefit.tasks.regularizers import Regularizer
from spikefit.tasks.solvers import LBFGS, NewtonSystem, ProximalSystem, Solver

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SPLITS = ("train", "heldout")
#: Neuron-bins of the posterior-predictive simulation by default (the compiled engine's
#: ~50 M neuron-steps/s make it seconds), and its bins for a model simulated step by step.
CHECK_NEURON_BINS, CHECK_REFERENCE_BINS = 100_000_000, 10_000
#: The pairs whose coupling filters and cross-correlograms are drawn.
STRONGEST_PAIRS = 12
#: The smallest and largest lag (bins) of the posterior-predictive cross-correlograms.
CCG_LAGS = (20, 200)
#: Solver steps of a cross-validation fit where the trainer sets no budget.
FOLD_STEPS = 100


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

    (for synaptic-activation models :math:`X * c` is the activation s(t-1); with a basis of
    coupling kernels, :math:`\sum_b W_{jib} (X_j * B_b)(t)`). The objective is the mean
    negative log-likelihood per neuron and bin, plus the ``regularizer`` on W. The likelihood
    is the model's own emission (:attr:`~spikefit.models.BaseModel.effective_emission`):
    Bernoulli (BernoulliGLM) or Poisson (PoissonGLM, RectifiedLNP, RectifiedSAM), or a
    user's. A model whose input stage is its own (no declared kernels) fits its parameters
    through its own ``input`` with the coupling fixed or none.

    Args:
        model: the spiking network model; its parameters are the starting point.
        fit: names of model parameters to fit (shared scalars), e.g. ``["theta"]``.
        per_neuron: names of model parameters to fit with one value per neuron (thresholds,
            biases, gains of the non-linearity), e.g. ``["theta"]`` or ``["b"]``.
        coupling: the coupling weights W (one per pair, or one per pair and basis function
            of the model's coupling basis): ``"dense"`` fits all N(N-1) pairs, ``"graph"``
            the edges of the data's network, both from 0; ``"fixed"`` keeps the network's
            weights, ``"none"`` leaves the neurons uncoupled.
        refractory_scale: fit a factor :math:`s_i` per neuron on the model's self
            (refractory) kernel, whose shape stays fixed.
        observation: the emission whose likelihood is fitted (default: the model's own; one
            without a link uses the model's non-linearity).
        regularizer: penalty on the fitted coupling weights (L1, L2 or GroupLasso); it names
            the solvers it works with.
        solver: :class:`~spikefit.tasks.solvers.LBFGS` (full batch, the default),
            :class:`~spikefit.tasks.solvers.Newton` (full batch, per-neuron blocks: the
            coupling, refractory scales and per-neuron offsets such as θ or b) or
            :class:`~spikefit.tasks.solvers.Adam` (time chunks).
        fdr: the false discovery rate q in (0, 1) at which the fitted pairs are called
            excitatory or inhibitory at the end of the fit
            (:mod:`~spikefit.tasks.likelihood.uncertainty`).
        check_steps: bins of the posterior-predictive check at the end of the fit
            (:mod:`~spikefit.tasks.likelihood.predictive`): the fitted network simulated and
            compared with the recorded training bins; None: the training bins, at most
            :data:`CHECK_NEURON_BINS` neuron-bins (:data:`CHECK_REFERENCE_BINS` bins for a
            model without declared kernels); 0 skips it.
        seed: the seed of the posterior-predictive simulation.
        penalty_grid: strengths λ ≥ 0 of the ``regularizer`` (which then only gives the
            kind), one chosen per postsynaptic unit by cross-validation before the fit
            (:func:`~spikefit.tasks.likelihood.cross_validation.cross_validate`); None: the
            regularizer's own strength for all units.
        cv_folds: folds K ≥ 2 of the cross-validation: contiguous time blocks of the
            training bins.
        cv_last_block: validate on the last of the ``cv_folds`` blocks only (e.g. 6: the
            last sixth of the training span), instead of on every block in turn.
        cv_per_unit: one strength per unit (its own best); false: the one strength whose
            cross-validated log-likelihood, summed over units, is best for every unit (so that
            the units' coupling weights compare, e.g. to rank the pairs of all units).
        cache_gib: most memory (GiB) that the spike traces and Newton designs kept between
            the evaluations of a step may take; the chunks beyond it are computed again at
            every use (bounded memory, slower).
        compute_uncertainty: the standard errors and connection calls at the end of the fit
            (their exact Hessian blocks cost N·T·P² for P parameters per neuron).
    """

    def __init__(
        self,
        model: BaseModel = DEFAULT_MODEL,
        fit: list[str] | None = None,
        per_neuron: list[str] | None = None,
        coupling: str = "dense",
        refractory_scale: bool = False,
        observation: Emission | None = None,
        regularizer: Regularizer | None = None,
        solver: Solver | None = None,
        fdr: float = 0.05,
        check_steps: int | None = None,
        seed: int = 0,
        penalty_grid: list[float] | None = None,
        cv_folds: int = 5,
        cv_last_block: bool = False,
        cv_per_unit: bool = True,
        cache_gib: float = 8.0,
        compute_uncertainty: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "observation", "regularizer", "solver"])
        self.automatic_optimization = False
        fit, per_neuron = list(fit or []), list(per_neuron or [])
        owner = self.owner = type(self).__name__
        model = own_model(model)
        one_of(f"{owner}.coupling", coupling, parameters.COUPLINGS)
        in_range(f"{owner}.fdr", fdr, 0, 1, low_open=True, high_open=True)
        if check_steps is not None:
            whole(f"{owner}.check_steps", check_steps, 0)
        whole(f"{owner}.seed", seed, 0)
        whole(f"{owner}.cv_folds", cv_folds, 2)
        non_negative(f"{owner}.cache_gib", cache_gib, "GiB")
        available = model.tunable_parameters
        for field, names in (("fit", fit), ("per_neuron", per_neuron)):
            unknown = [name for name in names if name not in available]
            if unknown:
                raise InputError(
                    f"{owner}.{field}",
                    f"{unknown} are not parameters of {type(model).__name__}",
                    f"names among {sorted(available)}",
                )
        self.fitted = list(dict.fromkeys(fit + per_neuron))
        self.fits_coupling = coupling in ("dense", "graph")
        if self.fits_coupling and "r" in self.fitted:
            raise InputError(
                f"{owner}.fit",
                f"r scales the coupling weights that coupling="
                f"{coupling!r} fits (only r·W is identifiable)",
                "either r or the coupling, not both",
            )
        if refractory_scale and model.self_kernel() is None:
            raise InputError(
                f"{owner}.refractory_scale",
                f"{type(model).__name__} has no self (refractory) kernel to scale",
                "false for this model",
            )
        if not (self.fitted or self.fits_coupling or refractory_scale):
            raise InputError(
                f"{owner}.fit",
                "nothing to fit",
                "parameters in fit or per_neuron, coupling 'dense' or 'graph', or refractory_scale",
            )
        if (self.fits_coupling or refractory_scale) and not model.declares_kernels:
            field = "coupling" if self.fits_coupling else "refractory_scale"
            raise InputError(
                f"{owner}.{field}",
                f"{type(model).__name__} overrides its input "
                "stage (input, message or connectivity_filter) without declaring "
                "kernels, so its coupling and self kernel cannot be fitted",
                "coupling fixed or none, or a model that declares its kernels "
                "(coupling_kernel, self_kernel)",
            )
        if penalty_grid is not None:
            self.check_grid(penalty_grid, regularizer)
        self.observation = self.likelihood_of(model, observation)
        self.model = model
        self.model.requires_grad_(False)
        self.regularizer = regularizer
        self.solver = solver if solver is not None else LBFGS()
        self.sums = nn.ModuleList(
            [nn.ModuleDict({key: SumMetric() for key in SUMS}) for _ in SPLITS]
        )
        self.n_neurons = 0
        self.n_basis = 1  # functions of the model's coupling basis (weights per pair)
        self.local_terms: list[parameters.LocalTerm] = []  # the blocks' per-neuron terms
        self.outside_blocks: list[str] = []  # fitted names outside the blocks
        self.standard_errors: torch.Tensor | None = None  # [N, P] at the end of the fit
        self.connections: uncertainty.Connections | None = None
        self.predictive: predictive.PredictiveCheck | None = None
        self.refractory_scale: nn.Parameter | None = None
        self.unit_strength: torch.Tensor | None = None  # [N] λ per postsynaptic unit
        self.penalizes_self_filter = False  # whether the self-filter weights are penalized
        self.cross_validation_pending = penalty_grid is not None
        self.results: dict = {}
        # the last step's traces and Newton designs, kept while the steps run on the same
        # chunks (the cross-validation's fits of one fold)
        self.step_cache: StepCache | None = None
        self.converged = False
        self.started = time.perf_counter()

    def check_grid(self, grid: list[float], regularizer: Regularizer | None) -> None:
        """Refuses in one line a ``penalty_grid`` that is empty, not strengths ≥ 0, or
        without a regularizer or fitted coupling to weigh."""
        field = f"{self.owner}.penalty_grid"
        if not isinstance(grid, list | tuple) or not grid:
            raise InputError(field, f"{grid!r} is not a list of strengths", "a list of λ ≥ 0")
        non_negative(field, grid)
        if regularizer is None or not self.fits_coupling:
            raise InputError(
                field,
                "there is no penalty to choose the strength of",
                "a regularizer (L1, L2 or GroupLasso) and coupling 'dense' or 'graph'",
            )

    def likelihood_of(self, model: BaseModel, observation: Emission | None) -> Emission:
        """``observation``, or the model's own emission; an InputError naming the model when
        it has none with a likelihood."""
        emission = observation if observation is not None else model.effective_emission
        if emission is None:
            raise InputError(
                f"{self.owner}.model",
                f"{type(model).__name__} overrides "
                "emit_spikes without declaring an emission, so its likelihood is "
                "unknown",
                "the class attribute emission = Bernoulli(...) or "
                "Poisson(...) on the model, or the observation argument",
            )
        if not emission.has_likelihood:
            raise InputError(
                f"{self.owner}.model",
                f"{type(model).__name__}'s "
                f"{type(emission).__name__} emission is deterministic and has no "
                "likelihood",
                "a model with a Bernoulli or Poisson emission",
            )
        return emission

    # ------------------------------------------------------------------ set-up
    @property
    def history_bins(self) -> int:
        """Bins of history a bin's input depends on (the model's memory)."""
        return self.model.memory_steps

    @override
    def setup(self, stage: str) -> None:
        if self.n_neurons:
            return
        data = self.checked_data()
        n = self.n_neurons = data.n_neurons
        if data.hparams.clip_counts is not None:
            self.results["clipped_bins"] = data.clipped_bins
        basis = self.model.coupling_basis().detach()  # (before per-neuron parameters)
        self.n_basis = len(basis)
        for name in self.hparams.per_neuron or []:
            expand_per_neuron(
                self.model,
                name,
                n,
                f"{self.owner}.per_neuron",
                f"a scalar or one value per neuron [{n}]",
            )
        for name in self.fitted:
            self.model.get_parameter(name).requires_grad_(True)
        own = self.model.self_kernel_weights()
        self.penalizes_self_filter = (
            self.regularizer is not None
            and self.regularizer.self_filter
            and any(self.model.get_parameter(name) is own for name in self.hparams.per_neuron or [])
        )
        if self.hparams.refractory_scale:
            self.refractory_scale = nn.Parameter(torch.ones(n))
        edge_index, weights = parameters.coupling_of(
            self.hparams.coupling, data.network, n, self.n_basis, f"{self.owner}.coupling"
        )
        self.register_buffer("edge_index", edge_index)
        if self.fits_coupling:
            self.coupling_weights = nn.Parameter(weights)
        else:
            self.register_buffer("coupling_weights", weights)
        self.register_buffer("baseline_rates", data.train_rates.clone())
        if self.regularizer is not None:
            self.unit_strength = torch.full((n,), float(self.regularizer.strength))
        if self.cross_validation_pending and data.n_train_bins < self.hparams.cv_folds:
            raise InputError(
                f"{self.owner}.cv_folds",
                f"{self.hparams.cv_folds} folds of {data.n_train_bins} training bins",
                "at most one fold per training bin",
            )
        true_W0 = None if data.network is None else graph_to_dense(data.network).float()
        if true_W0 is not None and true_W0.dim() == 3:  # per basis function: filter areas
            true_W0 = true_W0 @ basis.sum(1)
        self.register_buffer("true_W0", true_W0)
        self.check_parameters()

    def checked_data(self) -> SpikeTrainDataModule:
        """The trainer's data module, refused in one line unless it is a recording binned at
        the model's step that the solver and the emission can take."""
        data = getattr(self.trainer, "datamodule", None)
        if not isinstance(data, SpikeTrainDataModule):
            raise InputError(
                "data",
                f"{type(data).__name__} is not a SpikeTrainDataModule",
                "data.class_path: spikefit.data.SpikeTrainDataModule",
            )
        if not math.isclose(data.dt_ms, float(self.model.dt), rel_tol=1e-6):
            raise InputError(
                f"{type(data).__name__}.dt_ms",
                f"{data.dt_ms:g} ms differs from the model's dt, {float(self.model.dt):g} ms",
                "the recording binned at the model's step",
            )
        if self.solver.full_batch and data.hparams.chunks_per_batch is not None:
            raise InputError(
                f"{type(data).__name__}.chunks_per_batch",
                f"solver {type(self.solver).__name__} steps on every training bin at once",
                "null (or solver Adam)",
            )
        self.observation.check(data.spikes, f"{type(data).__name__}.path")
        if data.n_covariates != self.model.n_covariates:
            raise InputError(
                f"{type(data).__name__}.covariates",
                f"{data.n_covariates} covariates for a model of {self.model.n_covariates}",
                "one name per covariate of the model (its n_covariates)",
            )
        return data

    def check_parameters(self) -> None:
        """Probes the fitted parameters once on silence (per-neuron values act on each
        neuron alone), the regularizer's solvers, and which fitted parameters form the
        per-neuron blocks (Newton's, and the standard errors'): all for Newton, which
        refuses the others; for other solvers those that can."""
        n, per_neuron = self.n_neurons, self.hparams.per_neuron or []
        parameters.probe(self.model, self.chunk_input, n, f"{self.owner}.per_neuron", per_neuron)
        if self.regularizer is not None:
            self.regularizer.check_solver(self.solver, f"{self.owner}.regularizer")
        terms = (
            [("refractory_scale", self.refractory_scale)]
            if self.refractory_scale is not None
            else []
        )
        terms += [(name, self.model.get_parameter(name)) for name in self.fitted]
        if self.solver.needs_blocks:
            self.local_terms = parameters.local_terms(
                self.model,
                self.chunk_input,
                n,
                terms,
                per_neuron,
                type(self.solver).__name__,
                self.owner,
            )
        else:
            self.local_terms, self.outside_blocks = parameters.block_terms(
                self.model, self.chunk_input, n, terms, per_neuron, self.owner
            )

    # ------------------------------------------------------------------ the likelihood
    def pair_weights(self) -> torch.Tensor:
        r"""One weight per coupled pair [E]: the fitted weight, or on a basis the integral of
        the pair's coupling filter :math:`\sum_b W_{jib} \sum_\tau B_b(\tau)`."""
        weights = self.coupling_weights
        if weights.dim() == 1:
            return weights
        return parameters.filter_areas(weights, self.model.coupling_basis())

    def coupling_matrix(self) -> torch.Tensor:
        """:meth:`pair_weights` as a dense [N, N] matrix indexed [pre, post]."""
        return parameters.coupling_matrix(self.edge_index, self.pair_weights(), self.n_neurons)

    def chunk_input(self, chunk: Chunk, traces: tuple | None = None) -> torch.Tensor:
        """Input g [S, N] of the chunk's last S bins given the recorded history; ``traces``
        are the chunk's :meth:`~spikefit.models.BaseModel.spike_traces`, if known."""
        if self.fits_coupling:
            network = None
            dense = parameters.coupling_matrix(
                self.edge_index, self.coupling_weights, self.n_neurons
            )
        else:
            network = Data(
                edge_index=self.edge_index, W0=self.coupling_weights, num_nodes=self.n_neurons
            )
            dense = None
        return forced_input(self.model, chunk, network, dense, self.refractory_scale, traces)

    def chunk_log_likelihood(
        self, chunk: Chunk, traces: tuple | None = None, targets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Total log-likelihood (nats) of the chunk's last S bins; ``targets`` are their
        counts [S, N] (e.g. sparse), if already extracted."""
        if targets is None:
            targets = targets_of(chunk)
        input = self.chunk_input(chunk, traces)
        return self.observation.model_log_likelihood(self.model, targets, input)

    def penalty(self) -> torch.Tensor | float:
        """The regularizer on the fitted coupling weights, each pair's weighted by its
        postsynaptic unit's strength (:meth:`pair_strengths`), and on the
        :meth:`penalized_self_weights` with their unit's (0 without)."""
        total = 0.0
        if self.regularizer is not None and self.fits_coupling:
            total = self.regularizer(self.coupling_weights, self.pair_strengths())
        own = self.penalized_self_weights()
        if own is not None:
            total = total + self.regularizer(own, self.self_filter_strength())
        return total

    def penalized_self_weights(self) -> torch.Tensor | None:
        """The self-filter weights [N, A] fitted per neuron, where the regularizer penalizes
        them too (``L2(self_filter=True)``); else None."""
        return self.model.self_kernel_weights() if self.penalizes_self_filter else None

    def self_filter_strength(self) -> torch.Tensor:
        """λ [N] of every unit's self-filter weights: its ``unit_strength`` times the
        regularizer's ``self_filter`` factor."""
        return self.unit_strength.to(self.device) * self.regularizer.self_filter

    def pair_strengths(self) -> torch.Tensor:
        """λ [E] of every coupled pair: its postsynaptic unit's ``unit_strength``."""
        return self.unit_strength.to(self.device)[self.edge_index[1]]

    # ------------------------------------------------------------------ training
    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.solver.build([p for p in self.parameters() if p.requires_grad])

    @override
    def training_step(self, batch: list[Chunk], batch_idx: int) -> None:
        """One solver step on the batch's chunks (:meth:`solver_step`); the first one starts
        with the cross-validation of the penalty strengths, where asked
        (:func:`~spikefit.tasks.likelihood.cross_validation.cross_validate`), so that its
        fits run as the training steps do, DDP included."""
        if self.cross_validation_pending:
            self.results["cross_validation"] = cross_validation.cross_validate(self)
            self.cross_validation_pending = False
        objective, self.converged = self.solver_step(batch)
        self.log("train/objective", objective, prog_bar=True, batch_size=1)
        for name in self.fitted:
            self.log(f"param/{name}", self.model.get_parameter(name).mean(), batch_size=1)
        if self.converged:
            self.trainer.should_stop = True

    def solver_step(self, batch: list[Chunk]) -> tuple[torch.Tensor, bool]:
        """One solver step on ``batch``; returns the objective before it and whether the
        solver converged. The objective is the mean negative log-likelihood per neuron-bin
        over the chunks of all processes (plus the penalty); each chunk is evaluated and
        back-propagated on its own, so the autograd graph stays within one chunk (the kept
        spike traces take twice the batch's raster)."""
        optimizer = self.optimizers()
        strategy = self.trainer.strategy
        # the mean per neuron-bin of all processes (gradients are averaged over processes)
        scale = self.trainer.world_size / self.neuron_bins(batch)
        if self.step_cache is None or self.step_cache.batch is not batch:
            self.step_cache = StepCache(self.model, batch, self.hparams.cache_gib * 2**30)
        prepared = self.step_cache

        # a penalty that is not smooth is left to the proximal solver's step
        proximal = self.solver.proximal and self.regularizer is not None
        proximal = proximal and not self.regularizer.smooth

        def evaluate(backward: bool, penalized: bool = not proximal) -> torch.Tensor:
            """The objective over all processes (the penalty where ``penalized``); with its
            gradient when ``backward``."""
            total = torch.zeros((), device=self.device)
            for k, chunk in enumerate(batch):
                traces, targets = prepared(k)
                weight = chunk["weight"] * scale
                with torch.set_grad_enabled(backward):
                    link = self.observation.link(self.model, self.chunk_input(chunk, traces))
                    penalty = self.penalty() if k == 0 and penalized else 0.0
                    penalty = torch.as_tensor(penalty, device=self.device)
                nll = -self.observation.log_likelihood_of_link(targets, link.detach())
                total += weight * nll + penalty.detach()
                if backward:
                    self.manual_backward(
                        surrogate(self.observation, targets, link) * weight + penalty
                    )
            objective = strategy.reduce(total, reduce_op="mean")
            if not torch.isfinite(objective):
                raise InputError(
                    f"{self.owner}.model",
                    f"the negative log-likelihood became "
                    f"{objective.item()} at step {self.global_step}",
                    "finite rates: other "
                    "starting parameters, a larger observation floor or a lower lr",
                )
            return objective

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            return evaluate(backward=True)

        system = None
        if self.solver.needs_blocks:
            system = self.newton_system(batch, prepared, scale, lambda: evaluate(backward=False))
        elif self.solver.proximal:
            system = ProximalSystem(
                evaluate,
                lambda: torch.as_tensor(self.penalty() if proximal else 0.0),
                self.proximal_step if proximal else lambda step_size: None,
            )
        return self.solver.step(optimizer, closure, system)

    def proximal_step(self, step_size: float) -> None:
        """The regularizer's proximal operator on the fitted coupling weights, for a step of
        ``step_size``: every pair's threshold is the step times its strength."""
        if not self.fits_coupling:
            return
        with torch.no_grad():
            weights = self.coupling_weights
            threshold = step_size * self.pair_strengths()
            shrunk = self.regularizer.prox(weights.view(len(weights), -1), threshold)
            weights.copy_(shrunk.view_as(weights))

    def fit_chunks(self, chunks: list[Chunk]) -> None:
        """Fits on ``chunks`` (this process's share) from the current parameters, with the
        solver's memory cleared: :meth:`solver_step` until it converges, at most the
        trainer's ``max_steps`` (else ``max_epochs``, else :data:`FOLD_STEPS`) steps."""
        self.trainer.optimizers[0].state.clear()
        budget = self.trainer.max_steps
        budget = budget if budget > 0 else (self.trainer.max_epochs or 0)
        for _ in range(budget if budget > 0 else FOLD_STEPS):
            if self.solver_step(chunks)[1]:
                break
        self.trainer.optimizers[0].state.clear()

    def progress(self, total: int, description: str) -> tqdm:
        """A progress bar of ``total`` units of the fit's long inner work (the
        cross-validation's fits, the standard errors' chunks), on process 0 and where the
        trainer shows its own."""
        shown = self.trainer.is_global_zero and self.trainer.progress_bar_callback is not None
        return tqdm(total=total, desc=description, disable=not shown, leave=False)

    def trainable_state(self) -> list[torch.Tensor]:
        """Copies of the fitted parameters (those the optimizer steps)."""
        return [p.detach().clone() for p in self.parameters() if p.requires_grad]

    def unit_rows(self) -> list[torch.Tensor | None]:
        """For every fitted parameter, in :meth:`trainable_state`'s order, the postsynaptic
        unit of each of its rows, or None for a parameter that all units share."""
        per_neuron, rows = set(self.hparams.per_neuron or []), []
        units = torch.arange(self.n_neurons, device=self.device)
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            if self.fits_coupling and parameter is self.coupling_weights:
                rows.append(self.edge_index[1])
            elif parameter is self.refractory_scale or name.removeprefix("model.") in per_neuron:
                rows.append(units)
            else:
                rows.append(None)
        return rows

    def load_trainable_state(self, state: list[torch.Tensor]) -> None:
        """Sets the fitted parameters to ``state`` (from :meth:`trainable_state`)."""
        fitted = [p for p in self.parameters() if p.requires_grad]
        with torch.no_grad():
            for parameter, value in zip(fitted, state, strict=True):
                parameter.copy_(value)

    def unit_log_likelihood(self, chunks: list[Chunk]) -> torch.Tensor:
        """Each unit's total log-likelihood [N] (nats) of ``chunks``, over all processes."""
        total = torch.zeros(self.n_neurons, device=self.device)
        with torch.no_grad():
            for chunk in chunks:
                targets = targets_of(chunk)
                link = self.observation.link(self.model, self.chunk_input(chunk))
                total += chunk["weight"] * torch.stack(
                    [
                        self.observation.log_likelihood_of_link(targets[:, [i]], link[:, [i]])
                        for i in range(self.n_neurons)
                    ]
                )
        return self.trainer.strategy.reduce(total, reduce_op="sum")

    def neuron_bins(self, chunks: list[Chunk]) -> torch.Tensor:
        """The weighted neuron-bins of ``chunks``, summed over all processes."""
        local = sum(chunk["bins"] * chunk["weight"] for chunk in chunks) * self.n_neurons
        return self.trainer.strategy.reduce(
            torch.tensor(float(local), device=self.device), reduce_op="sum"
        )

    @override
    def on_train_end(self) -> None:
        """At the parameters the training ends with: the standard errors of every block's
        entries and, with fitted coupling, the connection calls, over every process's
        training chunks (:mod:`~spikefit.tasks.likelihood.uncertainty`); then the
        posterior-predictive check (:meth:`check_prediction`)."""
        self.step_cache = None
        if self.hparams.compute_uncertainty and self.block_mask().shape[1]:
            with torch.enable_grad():
                errors, covariance = uncertainty.uncertainty(
                    self, list(self.trainer.train_dataloader)
                )
            self.standard_errors = errors.cpu()
            if covariance is not None:
                self.connections = uncertainty.connections(self, covariance)
        self.check_prediction()

    def check_prediction(self) -> None:
        """The posterior-predictive check, by process 0: :meth:`fitted_model` simulated on
        :meth:`fitted_network` for :meth:`check_length` bins with ``seed`` against the
        recorded training bins, the cross-correlograms of the :meth:`strongest_pairs`
        (:func:`~spikefit.tasks.likelihood.predictive.posterior_predictive`); its summary
        goes to ``posterior_predictive`` (skipped, with the reason, where the fitted model
        is not a spikefit model of its own or has a covariate term, which is fit-only)."""
        steps = self.check_length()
        if not steps or not self.trainer.is_global_zero:
            return
        if self.model.n_covariates:
            self.results["posterior_predictive"] = {
                "skipped": "the covariate term is fit-only: simulations run without it"
            }
            return
        model = self.fitted_model()
        if model is None:
            self.results["posterior_predictive"] = {
                "skipped": f"the refractory scales cannot be folded into "
                f"{type(self.model).__name__}'s self kernel, which is not on a basis"
            }
            return
        recorded = self.trainer.datamodule.spikes[:, : self.trainer.datamodule.n_train_bins]
        pairs, _ = self.strongest_pairs()
        self.predictive = predictive.posterior_predictive(
            model,
            self.fitted_network(),
            recorded,
            steps,
            self.hparams.seed,
            self.edge_index.cpu()[:, pairs],
            min(max(self.history_bins, CCG_LAGS[0]), CCG_LAGS[1]),
        )
        self.results["posterior_predictive"] = self.predictive.summary()

    def check_length(self) -> int:
        """Bins of the posterior-predictive check: ``check_steps``, or by default the
        training bins, at most :data:`CHECK_NEURON_BINS` neuron-bins
        (:data:`CHECK_REFERENCE_BINS` bins for a model simulated step by step)."""
        if self.hparams.check_steps is not None:
            return self.hparams.check_steps
        most = (
            CHECK_NEURON_BINS // self.n_neurons
            if self.model.declares_kernels
            else CHECK_REFERENCE_BINS
        )
        return min(self.trainer.datamodule.n_train_bins, most)

    # ------------------------------------------------------------------ the fitted network
    def fitted_model(self) -> BaseModel | None:
        r"""The fitted model as a spikefit model of its own (a copy, without gradients), the
        refractory scales :math:`s_i` folded into the weights of its self kernel's basis
        (:math:`v_{ia} \leftarrow s_i v_{ia}`); None where they cannot be (a self kernel not
        on a basis)."""
        model = copy.deepcopy(self.model).requires_grad_(False)
        if self.refractory_scale is None:
            return model
        weights = model.self_kernel_weights()
        if model.self_basis() is None or not isinstance(weights, nn.Parameter):
            return None
        scale = self.refractory_scale.detach().unsqueeze(1)
        weights.data = scale * weights.detach().expand(self.n_neurons, -1)
        return model

    def fitted_network(self) -> Data:
        """The fitted (or given) coupling as a network: ``edge_index`` [2, E] and ``W0`` [E],
        or [E, B] on the model's coupling basis of B functions."""
        return Data(
            edge_index=self.edge_index.clone(),
            W0=self.coupling_weights.detach().clone(),
            num_nodes=self.n_neurons,
        )

    @property
    def fits_filters(self) -> bool:
        """Whether the fit shapes a filter of the spike history (the coupling, the
        refractory scale or parameters of the self or coupling kernels) of a model whose
        input is its declared history kernels (not a synaptic-activation model's)."""
        model = self.model
        if not model.declares_kernels or isinstance(model, SAModel):
            return False
        with torch.enable_grad():
            kernels = (model.self_kernel(), model.coupling_basis(), model.covariate_filters())
        return (
            self.fits_coupling
            or self.refractory_scale is not None
            or any(kernel is not None and kernel.requires_grad for kernel in kernels)
        )

    def fitted_filters(self) -> dict[str, np.ndarray] | None:
        """The arrays of ``fitted_filters.npz``
        (:func:`~spikefit.tasks.likelihood.filters.fitted_filters`) where the fit shapes a
        history filter (:attr:`fits_filters`), else None."""
        if not self.fits_filters:
            return None
        return fitted_filters(
            self.model,
            self.edge_index,
            self.coupling_weights.detach(),
            self.n_neurons,
            None if self.refractory_scale is None else self.refractory_scale.detach(),
        )

    def strongest_pairs(self, count: int = STRONGEST_PAIRS) -> tuple[torch.Tensor, str]:
        r"""The indices [≤ count] of the coupled pairs with the largest Wald statistic (with
        connection calls), else with the largest summed filter in absolute value
        :math:`|r_i \sum_b w_{jib} \sum_\tau B_b(\tau)|`, strongest first; and which."""
        if self.connections is not None:
            score, ranked = self.connections.statistic.nan_to_num(nan=-math.inf), "Wald statistic"
        else:
            r = self.model.edge_recurrence(self.edge_index).reshape(-1)
            score, ranked = (self.pair_weights() * r).detach().abs().cpu(), "|summed filter|"
        return score.argsort(descending=True)[:count], ranked

    def newton_system(
        self,
        batch: list[Chunk],
        prepared: Callable[[int], Prepared],
        scale: torch.Tensor,
        objective: Callable[[], torch.Tensor],
    ) -> NewtonSystem:
        """The ``objective`` of :meth:`training_step` in per-neuron blocks
        (:func:`~spikefit.tasks.likelihood.newton.newton_system`)."""
        cache = prepared if isinstance(prepared, StepCache) else None
        return newton.newton_system(self, batch, prepared, scale, objective, cache)

    def block_mask(self) -> torch.Tensor:
        """[N, P]: which entries of each neuron's block are fitted (not the absent coupling
        weights, e.g. the self-coupling)."""
        n, n_basis = self.n_neurons, self.n_basis
        width = (n_basis * n if self.fits_coupling else 0) + sum(
            term.width for term in self.local_terms
        )
        return newton.block_mask(
            self.edge_index if self.fits_coupling else None, n, n_basis, width, self.device
        )

    # ------------------------------------------------------------------ evaluation
    @override
    def validation_step(self, batch: list[Chunk], batch_idx: int, dataloader_idx: int = 0) -> None:
        sums = self.sums[dataloader_idx]
        for chunk in batch:
            spikes = targets_of(chunk)
            weight = chunk["weight"]
            baseline = self.baseline_rates.expand_as(spikes)
            sums["log_likelihood"].update(self.chunk_log_likelihood(chunk) * weight)
            sums["baseline"].update(self.observation.log_likelihood(spikes, baseline) * weight)
            sums["spikes"].update(spikes.sum() * weight)
            sums["bins"].update(spikes.numel() * weight)

    @override
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
            for name, value in likelihood_metrics(total).items():
                self.results.setdefault(name, {})[split] = value
                self.log(f"{split}/{name}", value, sync_dist=True)
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
        return edge_metrics(*self._compared_weights(), self.hparams.coupling == "dense")

    def _compared_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Fitted (:meth:`pair_weights`) and true weights [E] of the fitted pairs."""
        pre, post = self.edge_index
        return self.pair_weights().detach(), self.true_W0[pre, post]

    # ------------------------------------------------------------------ report
    @override
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        stamp(checkpoint, self, cross_validation=self.results.get("cross_validation"))

    @override
    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checks the checkpoint; a resumed fit keeps its cross-validated strengths."""
        chosen = match_state(self, checkpoint).get("cross_validation")
        if chosen is not None and self.cross_validation_pending:
            self.results["cross_validation"] = chosen
            self.unit_strength = torch.tensor(chosen["chosen_strength"])
            self.cross_validation_pending = False

    @override
    def on_fit_start(self) -> None:
        self.started = time.perf_counter()

    @override
    def configure_callbacks(self) -> list[L.Callback]:
        """``fitted_W0.npy``, ``connections.csv``, ``fitted_filters.npz``, ``fitted_model.pt``
        and ``fitted_network.pt``, the figures and the summary, written at the end of a fit."""
        return [
            WriteCouplingMatrix(),
            WriteConnections(),
            WriteFilters(),
            WriteFittedModel(),
            WriteFigures(),
            WriteSummary(),
        ]

    def connection_table(self) -> dict[str, list] | None:
        """The columns of ``connections.csv`` (:meth:`Connections.table
        <spikefit.tasks.likelihood.uncertainty.Connections.table>`), None before the end of a
        fit of the coupling."""
        return None if self.connections is None else self.connections.table()

    def summary(self) -> dict:
        """What the fit achieved, as written to ``summary.json``: log-likelihoods in nats per
        neuron per bin and the metrics of the last validation (at ``metrics_at_step``, of
        ``steps`` solver steps; validate every epoch to have them at the end), the standard
        errors and the counts of the connection calls (:meth:`uncertainty_summary`), the
        cross-validation of the penalty strengths (``cross_validation``) and the
        posterior-predictive check (``posterior_predictive``)."""
        fitted = {name: self.model.get_parameter(name).tolist() for name in self.fitted}
        if self.refractory_scale is not None:
            fitted["refractory_scale"] = self.refractory_scale.tolist()
        return {
            "task": "likelihood",
            "model": type(self.model).__name__,
            "observation": self.observation.name,
            "solver": type(self.solver).__name__,
            "coupling": self.hparams.coupling,
            "n_neurons": self.n_neurons,
            "log_likelihood_per_bin": self.results.get("log_likelihood_per_bin", {}),
            "bits_per_spike": self.results.get("bits_per_spike", {}),
            "parameters": fitted,
            **self.uncertainty_summary(),
            **{
                key: value
                for key, value in self.results.items()
                if key not in ("log_likelihood_per_bin", "bits_per_spike")
            },
            "converged": self.converged,
            "steps": self.global_step,
            "wall_time_s": time.perf_counter() - self.started,
        }

    def uncertainty_summary(self) -> dict:
        """From the end of the fit: ``standard_errors`` of every fitted parameter in the
        per-neuron blocks (a list per neuron), ``standard_errors_given`` the fitted names
        outside the blocks, held at their values, and ``connections`` the number of pairs
        called ``excitatory``, ``inhibitory`` and ``none`` at FDR ``fdr``."""
        if self.standard_errors is None:
            return {}
        first = self.n_basis * self.n_neurons if self.fits_coupling else 0
        errors = {}
        for term in self.local_terms:
            block = self.standard_errors[:, first : first + term.width]
            errors[term.name] = block.reshape(term.parameter.shape).tolist()
            first += term.width
        summary = {"standard_errors": errors, "standard_errors_given": self.outside_blocks}
        if self.connections is not None:
            summary["connections"] = self.connections.counts() | {"fdr": self.connections.fdr}
        return summary

    @staticmethod
    def describe(summary: dict) -> str:
        """A short human summary of :meth:`summary`."""
        ll, bits = summary["log_likelihood_per_bin"], summary["bits_per_spike"]
        lines = [
            f"\nspikefit likelihood fit of {summary['model']} ({summary['observation']}, "
            f"{summary['solver']}, coupling {summary['coupling']}) on "
            f"{summary['n_neurons']} neurons: "
            f"{'converged' if summary['converged'] else 'stopped'} after "
            f"{summary['wall_time_s']:.1f} s"
        ]
        for split in SPLITS:
            if split in ll:
                lines.append(
                    f"  {split}: log-likelihood {ll[split]:.6f} nats/neuron/bin, "
                    f"{bits[split]:.4f} bits/spike over the homogeneous baseline"
                )
        for name, value in summary["parameters"].items():
            values = np.atleast_1d(np.asarray(value))
            spread = f" ± {values.std():.4g} over {values.size}" if values.size > 1 else ""
            lines.append(f"  {name} = {values.mean():.4g}{spread}")
        for name in ("edge_auroc", "edge_average_precision", "weight_correlation"):
            if name in summary:
                lines.append(f"  {name.replace('_', ' ')}: {summary[name]:.4f}")
        if "connections" in summary:
            calls = summary["connections"]
            lines.append(
                f"  connections at FDR q ≤ {calls['fdr']:g}: {calls['excitatory']} excitatory, "
                f"{calls['inhibitory']} inhibitory, {calls['none']} none"
            )
        if "cross_validation" in summary:
            lines.append(cross_validation.describe(summary["cross_validation"]))
        if "posterior_predictive" in summary:
            lines.append(predictive.describe(summary["posterior_predictive"]))
        return "\n".join(lines)

    def figures(self) -> dict[str, Figure]:
        """After a fit of the coupling: ``connections``, the called matrix; with a known
        network too: ``coupling``, fitted against true weights and the ROC curve of |W| for
        edge detection; the fitted filters (:meth:`filter_figures`), with a ``penalty_grid``
        ``cross_validation``, every unit's cross-validation curve, and the
        posterior-predictive check's (``predictive_rates``, ``predictive_isi``,
        ``predictive_ccg``)."""
        figures = {}
        if self.connections is not None:
            figures["connections"] = connections_figure(self.connections, self.n_neurons)
        if self.true_W0 is not None and self.fits_coupling:
            figures["coupling"] = coupling_figure(
                *self._compared_weights(), self.n_neurons, self.results
            )
        arrays = self.fitted_filters()
        if arrays is not None:
            figures |= self.filter_figures(arrays)
        if "cross_validation" in self.results:
            figures["cross_validation"] = cross_validation.curves_figure(
                self.results["cross_validation"]
            )
        if self.predictive is not None:
            figures |= self.predictive.figures()
        return figures

    def filter_figures(self, arrays: dict[str, np.ndarray]) -> dict[str, Figure]:
        """From the :meth:`fitted_filters` ``arrays``: ``post_spike_filters``, every unit's
        post-spike gain (with a self kernel), ``coupling_filters``, those of the
        :meth:`strongest_pairs` (with coupled pairs), and ``covariate_filters`` (with a
        covariate term)."""
        figures = {}
        if "covariate_filters" in arrays:
            names = self.trainer.datamodule.hparams.get("covariates") or []
            figures["covariate_filters"] = covariate_filters_figure(arrays, names)
        if self.model.self_kernel() is not None:
            figures["post_spike_filters"] = post_spike_figure(
                arrays["self_filters"], arrays["lag_ms"]
            )
        pairs, ranked = self.strongest_pairs()
        if len(pairs):
            figures["coupling_filters"] = coupling_filters_figure(arrays, pairs.numpy(), ranked)
        return figures
