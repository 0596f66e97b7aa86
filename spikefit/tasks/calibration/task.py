"""Firing-rate calibration: tune model parameters so simulated networks hit target rates."""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import torch
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch_geometric.data import Data
from typing_extensions import override

from spikefit.checks import InputError, positive, whole
from spikefit.models import BaseModel
from spikefit.stimulus import BaseStimulus
from spikefit.tasks.calibration.estimator import (
    Errors,
    all_within_tolerance,
    flatten,
    judged_tolerances,
    log_below_target,
    more_trials,
    pool,
    precision_ratio,
)
from spikefit.tasks.calibration.jacobian import is_local, sparse_jacobian
from spikefit.tasks.calibration.run_files import WriteTunedModel, load_model_state, read_rates
from spikefit.tasks.calibration.solvers import CalibrationSolver, GaussNewton
from spikefit.tasks.callbacks import WriteFigures, WriteSummary
from spikefit.tasks.checkpoints import match_state, stamp
from spikefit.tasks.defaults import DEFAULT_MODEL, own_model
from spikefit.tasks.gauss_newton import Linearization
from spikefit.tasks.parameters import expand_per_neuron
from spikefit.tasks.targets import RateTarget, build_targets, check_populations

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Most (trial, neuron, step) values simulated and teacher-forced at once (8 MB per float
#: tensor: bounded memory, and faster than larger chunks, which leave the caches).
CHUNK_ELEMENTS = 1 << 21


class RateCalibration(L.LightningModule):
    r"""Tunes parameters of ``model`` (and its stimulus) so its networks fire at target rates.

    Targets (any combination): one global rate, a rate per population (named fractions of
    every network, by default the excitatory first and inhibitory second half), a rate per
    neuron, and the rate of the stimulated neurons during the stimulus.

    **Estimator.** Each step simulates ``window_steps`` steps (after equilibration, plus the
    model's memory) of the batch of networks in several trials without gradients, then
    recomputes the inputs of those steps from the simulated spikes with gradients (teacher
    forcing, :meth:`~spikefit.models.BaseModel.input_from_spikes`). The residuals are the
    relative errors of the expected rates

    .. math::
        e_k = \frac{\bar\mu_k / \Delta t - \nu_k}{\nu_k}, \qquad
        \bar\mu_k = \langle E[X_i(t) \mid \text{history}] \rangle_{(i, t) \in k}

    for every target k (one per neuron for per-neuron targets). :math:`E[X \mid \text{history}]`
    (:meth:`~spikefit.models.BaseModel.expected_spikes`) averages to the true rate, so e = 0
    exactly at the target, and given the spikes it is deterministic and differentiable, with
    less variance than spike counts. ThresholdSAM's threshold is differentiated through a
    surrogate, with its noise integrated out.

    **Solver** :class:`~spikefit.tasks.calibration.GaussNewton` (default):
    Levenberg–Marquardt steps (:class:`spikefit.tasks.gauss_newton.GaussNewton`) on the
    residuals ρ(e) = log(1 + e) below the target and e above (:func:`log_below_target`: no
    step overshoots a response between linear and exponential), with the Jacobian from
    de/dp of the teacher-forced expected rates: one backward pass per scalar target; a
    per-neuron target's errors depend on a per-neuron parameter only through the neuron's
    own value (checked on the first step), so that block of J is diagonal and costs one
    backward pass; its columns for shared parameters are Jacobian-vector products. J is the
    open-loop response (the history held fixed); the network's feedback (or a surrogate
    gradient) makes the true response differ, so the solver rescales its steps by the
    response the next step measures (a secant correction), and halves them when residuals
    grow. Whatever the scale, the fixed point is where the expected rate, hence the rate,
    equals the target. :class:`~spikefit.tasks.calibration.Adam`: Adam on the mean squared
    residual.

    **Precision.** A step pools trials (up to ``max_trials``, each further round as many as
    the variance estimate asks for) until every target's error has a standard error (from
    the spread over trials) of at most max(|error| / 3, ``precision × tolerance``) while
    some target is beyond the tolerance, and of ``precision × tolerance`` once all are
    within it: far from the target a short estimate suffices, near it the step is
    ``1 / precision`` times more precise than the tolerance. The default (1/5: 0.4% for a 2%
    tolerance) matches what the validation can resolve (the default's 10,000 steps × 500
    neurons count its rate to a Poisson standard error of 0.45%): a more precise step would
    pin the rate more tightly than the validation could confirm.

    **Done** when the rate of a fresh simulation (another seed, ``validation_steps`` ×
    ``validation_trials``) is within ``tolerance`` of every target (per-neuron targets: their
    mean) and, with ``neuron_tolerance``, every neuron's rate within ``neuron_tolerance`` of
    its own per-neuron target (the steps' precision then asks the same of every neuron). The
    validation simulation runs only after a step that started within tolerance (and at the
    last epoch), so steps far from the target cost no validation.

    The tuned model's state is written as ``tuned_model.pt`` at the end of a fit; a fit's
    ``fitted_model.pt`` (``model_state``) and its recorded rates (``neuron_rates_hz``: the
    fit's ``summary.json``) re-tune a fitted network to the rates it was fitted to.

    Args:
        model: the spiking network model (default: the seed introduction BernoulliGLM).
        model_state: a state dict loaded into ``model`` first (a likelihood fit's
            ``fitted_model.pt``, saved by a model of the same class and arguments).
        tune: names of the parameters to tune (``stimulus.<name>`` for the stimulus).
        per_neuron: tuned parameters that get one value per neuron of the batch.
        target_rate_hz: target mean rate of all neurons, in Hz.
        population_rates_hz: target rate per population name, in Hz.
        populations: population name → [start, stop) fractions of each network's neurons.
        neuron_rates_hz: target rate of every neuron of a network, in Hz: a list, or a file
            (:func:`~spikefit.tasks.calibration.run_files.read_rates`: a likelihood fit's
            ``summary.json``, its recorded rates, or a ``.npy``/``.pt`` vector).
        stimulated_rate_hz: target rate of stimulated neurons while stimulated, in Hz.
        stimulus: a stimulus to add to the model (its masks follow the network batches).
        solver: :class:`~spikefit.tasks.calibration.GaussNewton` (default),
            :class:`~spikefit.tasks.calibration.SafeguardedNewton` (one per-neuron parameter
            against per-neuron targets, e.g. a fitted network's biases) or
            :class:`~spikefit.tasks.calibration.Adam`.
        window_steps: steps simulated per trial of a step.
        equilibration_steps: steps run before each window.
        n_trials: trials per network in a step's first estimate.
        max_trials: most trials pooled in one step (Gauss–Newton), and in a validation.
        precision: standard error of a step's errors near the target, relative to the
            tolerance.
        tolerance: relative error of the validation rates counted as converged.
        neuron_tolerance: relative error of every neuron's validation rate from its
            per-neuron target counted as converged (None: only their mean is judged).
        validation_steps: steps of the fresh validation simulation.
        validation_trials: trials of the fresh validation simulation (None: as many as
            make every target's counted rate precise to a third of the tolerance).
        figures: draw the raster and rate histogram of the last validation at the end.
        seed: base seed of all simulations.
    """

    def __init__(
        self,
        model: BaseModel = DEFAULT_MODEL,
        model_state: str | None = None,
        tune: list[str] | None = None,
        per_neuron: list[str] | None = None,
        target_rate_hz: float | None = 10.0,
        population_rates_hz: dict[str, float] | None = None,
        populations: dict[str, tuple[float, float]] | None = None,
        neuron_rates_hz: list[float] | str | None = None,
        stimulated_rate_hz: float | None = None,
        stimulus: BaseStimulus | None = None,
        solver: CalibrationSolver | None = None,
        window_steps: int = 500,
        equilibration_steps: int = 100,
        n_trials: int = 4,
        max_trials: int = 256,
        precision: float = 0.2,
        tolerance: float = 0.02,
        neuron_tolerance: float | None = None,
        validation_steps: int = 10_000,
        validation_trials: int | None = None,
        figures: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "stimulus", "solver"])
        self.automatic_optimization = False
        owner = self.owner = type(self).__name__
        model = own_model(model)
        if model_state is not None:
            load_model_state(model, Path(model_state))
        solver = solver if solver is not None else GaussNewton()
        if not isinstance(solver, CalibrationSolver):
            kind = type(solver)
            given = solver if isinstance(solver, str) else f"{kind.__module__}.{kind.__name__}"
            raise InputError(
                f"{owner}.solver",
                f"{given!r} is not a calibration solver",
                "spikefit.tasks.calibration.GaussNewton or Adam",
            )
        check_settings(owner, self.hparams)
        tune = tune if tune is not None else ["theta"]
        if isinstance(neuron_rates_hz, str):
            neuron_rates_hz = read_rates(Path(neuron_rates_hz))
        self.neuron_rates = neuron_rates_hz
        rates = {
            "target_rate_hz": target_rate_hz,
            "stimulated_rate_hz": stimulated_rate_hz,
            **{f"population_rates_hz.{k}": v for k, v in (population_rates_hz or {}).items()},
            **{f"neuron_rates_hz[{i}]": v for i, v in enumerate(neuron_rates_hz or [])},
        }
        for name, value in rates.items():
            if value is not None:
                positive(f"{owner}.{name}", value, "Hz")
        check_populations(owner, population_rates_hz, populations)
        if stimulus is not None:
            model.add_stimulus(stimulus)
        available = model.tunable_parameters
        unknown = [name for name in tune if name not in available]
        if unknown or not tune:
            raise InputError(
                f"{owner}.tune",
                f"{unknown or tune} are not parameters of {type(model).__name__}",
                f"names among {sorted(available)}",
            )
        not_tuned = sorted(set(per_neuron or []) - set(tune))
        if not_tuned:
            raise InputError(
                f"{owner}.per_neuron",
                f"{not_tuned} are not tuned",
                "parameters also listed in tune",
            )
        self.model = model
        self.model.requires_grad_(False)
        for name in tune:
            available[name].requires_grad_(True)
        self.tuned = tune
        self.solver = solver
        self.started = time.perf_counter()
        self.achieved: dict[str, float | list[float]] = {}
        self.target_rates: dict[str, float | list[float]] = {}
        self.converged = False
        self.within_tolerance = False
        self.validated = False
        self.validated_trials = 0
        self.locality_checked = False
        self.prior: tuple[torch.Tensor, float] | None = None
        self.last_spikes: torch.Tensor | None = None

    # ------------------------------------------------------------------ simulation
    @override
    def setup(self, stage: str) -> None:
        if self.hparams.per_neuron and self.trainer.world_size > 1:
            raise InputError(
                f"{self.owner}.per_neuron",
                "per-neuron parameters belong to one "
                "batch of networks and cannot be shared across processes",
                "one device (trainer.devices 1)",
            )

    def prepare(self, batch: Data, batch_idx: int) -> None:
        """Per-neuron parameters take the batch's size; the stimulus its batch of masks."""
        for name in self.hparams.per_neuron or []:
            expand_per_neuron(
                self.model,
                name,
                batch.num_nodes,
                f"{self.owner}.per_neuron",
                "one batch of all networks (data.batch_size = data.n_networks)",
            )
        stimulus = self.model.stimulus
        if isinstance(stimulus, BaseStimulus):
            stimulus.set_batch(batch_idx % stimulus.n_batches)

    def simulate(
        self, batch: Data, batch_idx: int, steps: int, seed: int, trials: int
    ) -> torch.Tensor:
        """Spikes [K, N, memory + steps] of ``trials`` trials, without gradients (laid out
        from the simulation's spike events, as teacher forcing reads them)."""
        self.prepare(batch, batch_idx)
        events = self.model.simulate(
            batch,
            self.model.memory_steps + steps,
            seed=seed,
            n_trials=trials,
            verbose=False,
            as_events=True,
            equilibration_steps=self.hparams.equilibration_steps,
        )
        self.prepare(batch, batch_idx)
        spikes = torch.zeros(trials, batch.num_nodes, events.n_steps, device=batch.W0.device)
        spikes[events.trials, events.neurons, events.steps] = events.counts.float()
        return spikes

    def targets(self, batch: Data, steps: int) -> list[RateTarget]:
        self.check_network_sizes(batch)
        memory = self.model.memory_steps
        times = torch.arange(memory, memory + steps, device=batch.W0.device)
        on = None
        if self.model.stimulus is not None:
            on = self.model.stimulus_block(times, batch.num_nodes) != 0
        hp = self.hparams
        return build_targets(
            batch,
            on,
            hp.target_rate_hz,
            hp.population_rates_hz,
            hp.populations,
            self.neuron_rates,
            hp.stimulated_rate_hz,
            self.owner,
        )

    def check_network_sizes(self, batch: Data) -> None:
        """Raises an InputError unless every network of ``batch`` has one neuron per rate of
        ``neuron_rates_hz``."""
        if self.neuron_rates is None:
            return
        ptr = getattr(batch, "ptr", None)
        sizes = set((ptr[1:] - ptr[:-1]).tolist()) if ptr is not None else {batch.num_nodes}
        other = sorted(sizes - {len(self.neuron_rates)})
        if other:
            raise InputError(
                f"{self.owner}.neuron_rates_hz",
                f"{len(self.neuron_rates)} rates for a network of {other[0]} neurons",
                f"one rate per neuron of each network: {other[0]}",
            )

    def tolerances(self, targets: list[RateTarget]) -> torch.Tensor:
        """The tolerance of every error convergence judges [J]
        (:func:`~.estimator.judged_tolerances`)."""
        return judged_tolerances(targets, self.hparams.tolerance, self.hparams.neuron_tolerance)

    def rate_hz(self, counts: torch.Tensor) -> torch.Tensor:
        """Spikes per step → Hz."""
        return counts / self.model.dt * 1000

    def trial_errors(
        self, batch: Data, batch_idx: int, trials: int, draw: int
    ) -> tuple[list[RateTarget], list[torch.Tensor]]:
        """Every target's relative errors in each of ``trials`` fresh trials, [K] or [K, N],
        from the teacher-forced expected rates (differentiable in the tuned parameters).
        ``draw`` numbers the simulations of a step (each has its own seed)."""
        hp = self.hparams
        seed = hp.seed + 7919 * self.global_step + 104729 * self.global_rank + 15485863 * draw
        spikes = self.simulate(batch, batch_idx, hp.window_steps, seed, trials)
        g = self.model.input_from_spikes(batch, spikes)[..., self.model.memory_steps :]
        expected = self.model.expected_spikes(g.transpose(1, 2))
        targets = self.targets(batch, hp.window_steps)
        return targets, [
            target.relative_error(self.rate_hz(target.per_trial(expected))) for target in targets
        ]

    # ------------------------------------------------------------------ estimates
    def errors(self, targets: list[RateTarget], trial_errors: torch.Tensor) -> Errors:
        """The estimate of per-trial errors [K, R] over all processes, with the variance
        prior of the last steps near the target (:func:`~.estimator.pool`)."""
        return pool(
            targets,
            trial_errors,
            self.prior,
            self.trainer.world_size,
            self.trainer.strategy.reduce,
            each_neuron=self.hparams.neuron_tolerance is not None,
        )

    def linearize(self, batch: Data, batch_idx: int) -> Linearization:
        """Residuals, their variance and their Jacobian for a Gauss–Newton step, from trials
        pooled until precise enough (:func:`~.estimator.precision_ratio`): each further round
        simulates the trials the variance estimate asks for (at most 3× those pooled), in
        chunks of bounded memory. The Jacobian comes from the first chunk alone (later ones
        are teacher-forced without gradients): it only shapes the step, which the step scale
        corrects anyway, while the residuals set the fixed point and need every trial."""
        hp = self.hparams
        per_trial = self.model.memory_steps + hp.window_steps
        chunk = max(1, CHUNK_ELEMENTS // (batch.num_nodes * per_trial))
        pooled, jacobian, wanted = [], None, hp.n_trials
        draws = itertools.count()
        while True:
            for trials in [chunk] * (wanted // chunk) + [wanted % chunk] * (wanted % chunk > 0):
                with torch.set_grad_enabled(jacobian is None):
                    targets, trial_errors = self.trial_errors(batch, batch_idx, trials, next(draws))
                pooled.append(self.check_finite(flatten(trial_errors)))
                if jacobian is None:
                    jacobian = self.jacobian([error.mean(dim=0) for error in trial_errors])
            errors = self.errors(targets, torch.cat(pooled))
            ratio = precision_ratio(errors, self.tolerances(targets), hp.precision)
            if ratio <= 1 or errors.trials >= hp.max_trials:
                break
            wanted = more_trials(ratio, errors.trials, hp.max_trials)
        within = all_within_tolerance(errors, self.tolerances(targets))
        self.prior = errors.prior if within else None
        jacobian = jacobian.coalesce()
        if self.trainer.world_size > 1:
            jacobian = self.trainer.strategy.reduce(jacobian.to_dense(), reduce_op="mean")
        self.record(targets, errors)
        return log_below_target(Linearization(errors.residuals, jacobian, errors.variance))

    def jacobian(self, errors: list[torch.Tensor]) -> torch.Tensor:
        """J [R, P] (sparse COO) of the targets' errors (a scalar or one per neuron each)
        with respect to the tuned parameters, flattened in ``tune`` order
        (:func:`~.jacobian.sparse_jacobian`)."""
        per_neuron = self.hparams.per_neuron or []
        return sparse_jacobian(
            errors,
            [self.model.get_parameter(name) for name in self.tuned],
            [name in per_neuron for name in self.tuned],
            self.check_locality,
        )

    def check_locality(
        self, error: torch.Tensor, own: list[torch.Tensor], diagonals: list[torch.Tensor | None]
    ) -> None:
        """Checks once (with one random Jacobian-vector product) that each neuron's error
        depends on the per-neuron parameters only through the neuron's own values."""
        if self.locality_checked:
            return
        if not is_local(error, own, diagonals, torch.Generator().manual_seed(self.hparams.seed)):
            names = [n for n in self.tuned if n in (self.hparams.per_neuron or [])]
            raise InputError(
                f"{self.owner}.per_neuron",
                f"{names} reach other neurons' rates "
                f"under teacher forcing in {type(self.model).__name__}, so the "
                f"Gauss–Newton solver's diagonal Jacobian does not hold",
                "solver Adam for these parameters",
            )
        self.locality_checked = True

    def check_finite(self, trial_errors: torch.Tensor) -> torch.Tensor:
        """``trial_errors``, or an InputError naming the model if one is not finite."""
        if not torch.isfinite(trial_errors).all():
            loss = trial_errors.square().mean()
            values = ", ".join(
                f"{name} = {self.model.get_parameter(name).mean().item():.4g}"
                for name in self.tuned
            )
            raise InputError(
                f"{self.owner}.model",
                f"the calibration loss became {loss.item()} at step {self.global_step} ({values})",
                "finite expected rates: start the tuned parameters nearer the "
                "target" + self.solver.remedy,
            )
        return trial_errors

    def record(self, targets: list[RateTarget], errors: Errors) -> None:
        """Logs a step's estimate and notes whether it was within tolerance."""
        self.within_tolerance = all_within_tolerance(errors, self.tolerances(targets))
        parts = errors.residuals.split([target.rate_hz.numel() for target in targets])
        loss = torch.stack([part.square().mean() for part in parts]).mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=1)
        self.log("train/trials", float(errors.trials), batch_size=1)
        for target, error in zip(targets, errors.judged[: len(targets)], strict=True):
            rate = target.rate_hz.mean() * (1 + error)  # the mean rate, in Hz
            self.log(f"train/rate_hz/{target.name}", rate, prog_bar=True, batch_size=1)
        for name in self.tuned:
            self.log(f"param/{name}", self.model.get_parameter(name).mean(), batch_size=1)

    # ------------------------------------------------------------------ steps
    @override
    def training_step(self, batch: Data, batch_idx: int) -> None:
        self.solver.step(self, batch, batch_idx)

    @override
    def validation_step(self, batch: Data, batch_idx: int) -> None:
        """A fresh simulation (another seed), after steps that started within tolerance and
        at the last epoch; skipped otherwise."""
        last_epoch = self.current_epoch == self.trainer.max_epochs - 1
        if not (self.within_tolerance or last_epoch):
            return
        steps = self.hparams.validation_steps
        targets = self.targets(batch, steps)
        trials = self.validation_trials(targets, batch.num_nodes)
        spikes = self.simulate(
            batch,
            batch_idx,
            steps,
            trials=trials,
            seed=self.hparams.seed + 1_000_003 + 7 * self.global_rank,
        )
        spikes = spikes[..., self.model.memory_steps :].transpose(1, 2)
        rates = {"global": self.rate_hz(spikes.mean())}
        for target in targets:
            rates[target.name] = self.rate_hz(target.achieved(spikes))
            self.target_rates[target.name] = target.rate_hz.tolist()
        for name, rate in rates.items():
            self.log(
                f"val/rate_hz/{name}", rate.mean(), sync_dist=True, batch_size=batch.num_graphs
            )
            self.achieved[name] = rate.tolist()
        self.last_spikes = spikes[0]
        self.validated, self.validated_trials = True, trials

    def validation_trials(self, targets: list[RateTarget], n_neurons: int) -> int:
        """``validation_trials``, or (None) enough trials that every target's counted rate
        (and with ``neuron_tolerance`` every neuron's of a per-neuron target) has a Poisson
        standard error of at most a third of its tolerance (a calibrated model passes with
        99.7% probability): 1 for the default's 500 neurons at 10 Hz over 10,000 steps, more
        for a few neurons; at most ``max_trials``."""
        hp = self.hparams
        if hp.validation_trials is not None:
            return hp.validation_trials
        steps, dt = hp.validation_steps, float(self.model.dt)
        needed = [
            (target.spikes_per_trial(n_neurons, steps, dt), hp.tolerance) for target in targets
        ]
        if hp.neuron_tolerance is not None:
            needed += [
                (float(target.rate_hz.min()) * steps * dt / 1000, hp.neuron_tolerance)
                for target in targets
                if target.rate_hz.dim() == 1
            ]
        trials = max(math.ceil(9 / (tolerance**2 * spikes)) for spikes, tolerance in needed)
        return min(hp.max_trials, trials)

    @override
    def on_validation_epoch_end(self) -> None:
        if not self.validated:
            return
        self.validated = False
        metrics = self.trainer.callback_metrics
        for name, value in self.achieved.items():  # averaged over processes under DDP
            if not isinstance(value, list):
                self.achieved[name] = float(metrics[f"val/rate_hz/{name}"])
        errors = [
            abs(
                torch.tensor(self.achieved[name]).mean().item() - torch.tensor(target).mean().item()
            )
            / torch.tensor(target).mean().item()
            for name, target in self.target_rates.items()
        ]
        neuron_tolerance = self.hparams.neuron_tolerance  # given with per-neuron targets
        each_within = (
            neuron_tolerance is None
            or largest_neuron_error(self.achieved, self.target_rates) <= neuron_tolerance
        )
        self.converged = bool(errors) and max(errors) <= self.hparams.tolerance and each_within
        if self.converged and not self.trainer.sanity_checking:
            self.trainer.should_stop = True

    @override
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        stamp(
            checkpoint,
            self,
            prior=self.prior,
            within_tolerance=self.within_tolerance,
            locality_checked=self.locality_checked,
        )

    @override
    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Per-neuron parameters take their checkpointed size, and the solver's state (the
        variance prior, whether the last step was within tolerance) carries on, so a resumed
        run ends where an uninterrupted one does."""
        resizable = [f"model.{name}" for name in self.hparams.per_neuron or []]
        state = match_state(self, checkpoint, resizable)
        self.prior = state.get("prior")
        self.within_tolerance = state.get("within_tolerance", False)
        self.locality_checked = state.get("locality_checked", False)

    @override
    def configure_optimizers(self) -> OptimizerLRScheduler:
        return self.solver.build([self.model.get_parameter(name) for name in self.tuned])

    @override
    def configure_callbacks(self) -> list[L.Callback]:
        """The figures (with ``figures``), the tuned model's state and the summary, written
        at the end of a fit."""
        outputs = [WriteTunedModel(), WriteSummary()]
        return [WriteFigures(), *outputs] if self.hparams.figures else outputs

    # ------------------------------------------------------------------ results
    def summary(self) -> dict:
        """What the run achieved, as written to ``summary.json`` (empty before the first
        validation: nothing to report)."""
        if self.last_spikes is None:
            return {}
        return {
            "task": "calibration",
            "model": type(self.model).__name__,
            "targets": self.target_rates,
            "achieved_rate_hz": self.achieved,
            "parameters": {name: self.model.get_parameter(name).tolist() for name in self.tuned},
            "converged": self.converged,
            "solver": type(self.solver).__name__,
            "steps": self.global_step,
            "tolerance": self.hparams.tolerance,
            "neuron_tolerance": self.hparams.neuron_tolerance,
            "validation_steps": self.hparams.validation_steps,
            "validation_trials": self.validated_trials,
            "wall_time_s": time.perf_counter() - self.started,
        }

    @staticmethod
    def describe(summary: dict) -> str:
        """The one-line console summary of :meth:`summary`."""
        achieved = ", ".join(
            f"{k} {torch.tensor(summary['achieved_rate_hz'][k]).mean():.3f} Hz "
            f"(target {torch.tensor(v).mean():g})"
            for k, v in summary["targets"].items()
        )
        parameters = ", ".join(
            f"{k} = {torch.tensor(v).mean():.4g}" + (" (mean)" if isinstance(v, list) else "")
            for k, v in summary["parameters"].items()
        )
        largest = largest_neuron_error(summary["achieved_rate_hz"], summary["targets"])
        if largest is not None:
            achieved += f" (largest neuron error {100 * largest:.1f}%)"
        trials = summary["validation_trials"]
        return (
            f"\nspikefit calibration: {achieved} on {summary['validation_steps']} fresh "
            f"steps × {trials} trial{'s' * (trials > 1)}: "
            f"{'converged' if summary['converged'] else 'NOT converged'}; "
            f"{parameters}; {summary['wall_time_s']:.1f} s"
        )

    def figures(self) -> dict[str, Figure]:
        """Raster (at most the first 100 neurons and 2,000 steps of the last validation's
        first trial) and the histogram of its neurons' rates, titles saying what they show
        (none before the first validation)."""
        if self.last_spikes is None:
            return {}
        from matplotlib.figure import Figure

        spikes = self.last_spikes
        dt = float(self.model.dt)
        steps, neurons = spikes.shape
        shown_steps, shown = min(steps, 2000), min(neurons, 100)
        raster = Figure(figsize=(8, 4))
        axis = raster.subplots()
        step, neuron = spikes[:shown_steps, :shown].nonzero(as_tuple=True)
        axis.scatter(step.cpu() * dt, neuron.cpu(), s=1, c="k")
        which = f"all {neurons}" if shown == neurons else f"first {shown} of {neurons}"
        axis.set(
            xlabel="time (ms)",
            ylabel="neuron",
            title=f"validation raster: {which} neurons, first {shown_steps * dt:g} of "
            f"{steps * dt:g} ms (trial 1)",
        )
        histogram = Figure(figsize=(5, 4))
        axis = histogram.subplots()
        axis.hist((spikes.mean(dim=0) / dt * 1000).cpu(), bins=30)
        axis.set(
            xlabel="firing rate (Hz)",
            ylabel="neurons",
            title=f"rates of all {neurons} neurons over {steps * dt:g} ms (trial 1)",
        )
        return {"raster": raster, "rate_histogram": histogram}


def largest_neuron_error(achieved: dict, targets: dict) -> float | None:
    """The largest relative error of a neuron's ``achieved`` rate from its own rate of a
    per-neuron target (target name → a list of rates in Hz, as in :meth:`summary
    <RateCalibration.summary>`); None without per-neuron targets."""
    errors = []
    for name, rates in targets.items():
        if isinstance(rates, list):
            rates = torch.tensor(rates)
            errors.append(float(((torch.tensor(achieved[name]) - rates).abs() / rates).max()))
    return max(errors, default=None)


def check_settings(owner: str, settings: dict) -> None:
    """Raises an InputError naming the first out-of-range setting of the calibration."""
    for name in ("window_steps", "n_trials", "validation_steps"):
        whole(f"{owner}.{name}", settings[name], 1, "of steps" if "steps" in name else "")
    whole(f"{owner}.equilibration_steps", settings["equilibration_steps"], 0, "of steps")
    whole(f"{owner}.max_trials", settings["max_trials"], settings["n_trials"])
    if settings["validation_trials"] is not None:
        whole(f"{owner}.validation_trials", settings["validation_trials"], 1)
    for name in ("precision", "tolerance"):
        positive(f"{owner}.{name}", settings[name])
    if settings["neuron_tolerance"] is not None:
        positive(f"{owner}.neuron_tolerance", settings["neuron_tolerance"])
        if settings["neuron_rates_hz"] is None:
            raise InputError(
                f"{owner}.neuron_tolerance",
                "judges per-neuron targets, and none is given",
                "null, or targets in neuron_rates_hz",
            )
