"""Firing-rate calibration: tune model parameters so simulated networks hit target rates."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import matplotlib
import torch
from jsonargparse import lazy_instance
from torch_geometric.data import Data

from spikefit.models import BaseModel, BernoulliGLM
from spikefit.stimulus import BaseStimulus
from spikefit.tasks.targets import RateTarget, build_targets, check_rate

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SEED_INTRODUCTION = dict(alpha=0.2, beta=0.5, abs_ref_scale=3, rel_ref_scale=7,
                         abs_ref_strength=-100, rel_ref_strength=-30, coupling_window=5,
                         theta=5, r=1, dt=1)
#: The default model of the CLI: the seed introduction's BernoulliGLM.
DEFAULT_MODEL = lazy_instance(BernoulliGLM, **SEED_INTRODUCTION)


class RateCalibration(L.LightningModule):
    r"""Tunes parameters of ``model`` (and its stimulus) so its networks fire at target rates.

    Targets (any combination): one global rate, a rate per population (named fractions of
    every network, by default the excitatory first and inhibitory second half), a rate per
    neuron, and the rate of the stimulated neurons during the stimulus.

    Each training step simulates ``window_steps`` steps (after equilibration, plus the
    model's memory) of a batch of networks and ``n_trials`` trials without gradients, then
    recomputes the inputs of those steps from the simulated spikes with gradients (teacher
    forcing, :meth:`~spikefit.models.BaseModel.input_from_spikes`) and minimises

    .. math::
        \mathcal{L} = \frac{1}{|\mathcal{T}|} \sum_{k \in \mathcal{T}}
        \left\langle \left(\frac{\bar\mu_k / \Delta t - \nu_k}{\nu_k}\right)^2
        \right\rangle, \qquad
        \bar\mu_k = \langle E[X_i(t) \mid \text{history}] \rangle_{(i, t) \in k}

    Why this estimator: :math:`E[X \mid \text{history}]` (the model's
    :meth:`~spikefit.models.BaseModel.expected_spikes`) averages to the true rate, so the loss
    vanishes exactly at the target; its gradient, which ignores how the history depends on
    the parameters, is deterministic given the spikes and so has low variance. A
    score-function (REINFORCE) gradient is unbiased but far noisier, and a straight-through
    gradient of sampled spikes has no such fixed point. ThresholdSAM's deterministic
    threshold is differentiated through a sigmoid surrogate, with its noise integrated out.

    Achieved rates are measured on a fresh simulation (another seed, ``validation_steps``
    steps); training stops once every target is within ``tolerance`` (per-neuron targets:
    their mean).

    Args:
        model: the spiking network model (default: the seed introduction BernoulliGLM).
        tune: names of the parameters to tune (``stimulus.<name>`` for the stimulus).
        per_neuron: tuned parameters that get one value per neuron of the batch.
        target_rate_hz: target mean rate of all neurons, in Hz.
        population_rates_hz: target rate per population name, in Hz.
        populations: population name → [start, stop) fractions of each network's neurons.
        neuron_rates_hz: target rate of every neuron of a network, in Hz.
        stimulated_rate_hz: target rate of stimulated neurons while stimulated, in Hz.
        stimulus: a stimulus to add to the model (its masks follow the network batches).
        window_steps: steps simulated per training step.
        equilibration_steps: steps run before each window.
        n_trials: trials per network and step.
        lr: Adam learning rate.
        lr_decay: multiplicative learning-rate decay per step.
        tolerance: relative error of the validation rates counted as converged.
        validation_steps: steps of the fresh validation simulation.
        seed: base seed of all simulations.
    """

    def __init__(self, model: BaseModel = DEFAULT_MODEL, tune: list[str] | None = None,
                 per_neuron: list[str] | None = None, target_rate_hz: float | None = 10.0,
                 population_rates_hz: dict[str, float] | None = None,
                 populations: dict[str, tuple[float, float]] | None = None,
                 neuron_rates_hz: list[float] | None = None,
                 stimulated_rate_hz: float | None = None, stimulus: BaseStimulus | None = None,
                 window_steps: int = 500, equilibration_steps: int = 100, n_trials: int = 4,
                 lr: float = 0.05, lr_decay: float = 0.98, tolerance: float = 0.02,
                 validation_steps: int = 10_000, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "stimulus"])
        tune = tune if tune is not None else ["theta"]
        rates = {"target_rate_hz": target_rate_hz, "stimulated_rate_hz": stimulated_rate_hz,
                 **{f"population_rates_hz.{k}": v for k, v in (population_rates_hz or {}).items()},
                 **{f"neuron_rates_hz[{i}]": v for i, v in enumerate(neuron_rates_hz or [])}}
        for name, value in rates.items():
            if value is not None:
                check_rate(name, value)
        if stimulus is not None:
            model.add_stimulus(stimulus)
        available = model.tunable_parameters
        unknown = [name for name in tune if name not in available]
        if unknown or not tune:
            raise ValueError(f"tune: {unknown or tune} not among the parameters of "
                             f"{type(model).__name__}: {sorted(available)}")
        not_tuned = sorted(set(per_neuron or []) - set(tune))
        if not_tuned:
            raise ValueError(f"per_neuron: {not_tuned} must also be listed in tune")
        self.model = model
        self.model.requires_grad_(False)
        for name in tune:
            available[name].requires_grad_(True)
        self.tuned = tune
        self.started = time.perf_counter()
        self.achieved: dict[str, float | list[float]] = {}
        self.target_rates: dict[str, float | list[float]] = {}
        self.converged = False
        self.last_spikes: torch.Tensor | None = None

    # ------------------------------------------------------------------ simulation
    def setup(self, stage: str) -> None:
        if self.hparams.per_neuron and self.trainer.world_size > 1:
            raise ValueError("per_neuron parameters belong to one batch of networks; they "
                             "cannot be shared across processes (use one device)")

    def prepare(self, batch: Data, batch_idx: int) -> None:
        """Per-neuron parameters take the batch's size; the stimulus its batch of masks."""
        for name in self.hparams.per_neuron or []:
            parameter = self.model.get_parameter(name)
            if parameter.dim() == 0:
                parameter.data = parameter.data.expand(batch.num_nodes).clone()
            elif parameter.shape[0] != batch.num_nodes:
                raise ValueError(f"per-neuron '{name}' has {parameter.shape[0]} values but the "
                                 f"batch has {batch.num_nodes} neurons: every batch must hold "
                                 f"the same networks (one batch of all networks)")
        stimulus = self.model.stimulus
        if isinstance(stimulus, BaseStimulus):
            stimulus.set_batch(batch_idx % stimulus.n_batches)

    def simulate(self, batch: Data, batch_idx: int, steps: int, seed: int) -> torch.Tensor:
        """Spikes [K, N, memory + steps] without gradients."""
        self.prepare(batch, batch_idx)
        spikes = self.model.simulate(batch, self.model.memory_steps + steps, seed=seed,
                                     n_trials=self.hparams.n_trials, verbose=False,
                                     equilibration_steps=self.hparams.equilibration_steps,
                                     store_as_dtype=torch.float32)
        self.prepare(batch, batch_idx)
        return spikes.view(batch.num_nodes, -1, self.hparams.n_trials).permute(2, 0, 1)

    def targets(self, batch: Data, steps: int) -> list[RateTarget]:
        memory = self.model.memory_steps
        times = torch.arange(memory, memory + steps, device=batch.W0.device)
        on = None
        if self.model.stimulus is not None:
            on = self.model.stimulus_block(times, batch.num_nodes) != 0
        hp = self.hparams
        return build_targets(batch, on, hp.target_rate_hz, hp.population_rates_hz,
                             hp.populations, hp.neuron_rates_hz, hp.stimulated_rate_hz)

    def rates_hz(self, counts: torch.Tensor, targets: list[RateTarget]) -> list[torch.Tensor]:
        """Achieved rate of every target from counts per step [K, S, N], in Hz."""
        return [target.achieved(counts) / self.model.dt * 1000 for target in targets]

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Data, batch_idx: int) -> torch.Tensor:
        steps = self.hparams.window_steps
        seed = self.hparams.seed + 7919 * self.global_step + 104729 * self.global_rank
        spikes = self.simulate(batch, batch_idx, steps, seed)
        g = self.model.input_from_spikes(batch, spikes)[..., self.model.memory_steps:]
        targets = self.targets(batch, steps)
        rates = self.rates_hz(self.model.expected_spikes(g.transpose(1, 2)), targets)
        errors = [target.relative_error(rate) for target, rate in zip(targets, rates,
                                                                          strict=True)]
        loss = torch.stack([(error ** 2).mean() for error in errors]).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the calibration loss became {loss.item()} at step "
                                     f"{self.global_step}: lower lr or check the model")
        size = batch.num_graphs
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        for target, rate in zip(targets, rates, strict=True):
            self.log(f"train/rate_hz/{target.name}", rate.mean(), prog_bar=True,
                     batch_size=size)
        for name in self.tuned:
            self.log(f"param/{name}", self.model.get_parameter(name).mean(), batch_size=size)
        return loss

    def validation_step(self, batch: Data, batch_idx: int) -> None:
        steps = self.hparams.validation_steps
        spikes = self.simulate(batch, batch_idx, steps,
                               seed=self.hparams.seed + 1_000_003 + 7 * self.global_rank)
        spikes = spikes[..., self.model.memory_steps:].transpose(1, 2)
        targets = self.targets(batch, steps)
        rates = {"global": spikes.mean() / self.model.dt * 1000}
        for target, rate in zip(targets, self.rates_hz(spikes, targets), strict=True):
            rates[target.name] = rate
            self.target_rates[target.name] = target.rate_hz.tolist()
        for name, rate in rates.items():
            self.log(f"val/rate_hz/{name}", rate.mean(), sync_dist=True,
                     batch_size=batch.num_graphs)
            self.achieved[name] = rate.tolist()
        self.last_spikes = spikes[0]

    def on_validation_epoch_end(self) -> None:
        metrics = self.trainer.callback_metrics
        for name, value in self.achieved.items():  # averaged over processes under DDP
            if not isinstance(value, list):
                self.achieved[name] = float(metrics[f"val/rate_hz/{name}"])
        errors = [abs(torch.tensor(self.achieved[name]).mean().item() - torch.tensor(target)
                      .mean().item()) / torch.tensor(target).mean().item()
                  for name, target in self.target_rates.items()]
        self.converged = bool(errors) and max(errors) <= self.hparams.tolerance
        if self.converged and not self.trainer.sanity_checking:
            self.trainer.should_stop = True

    def configure_optimizers(self):
        optimizer = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad],
                                     lr=self.hparams.lr)
        decay = torch.optim.lr_scheduler.ExponentialLR(optimizer, self.hparams.lr_decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": decay, "interval": "step"}}

    # ------------------------------------------------------------------ results
    def summary(self) -> dict:
        """What the run achieved, as written to ``summary.json``."""
        return {
            "task": "calibration",
            "model": type(self.model).__name__,
            "targets": self.target_rates,
            "achieved_rate_hz": self.achieved,
            "parameters": {name: self.model.get_parameter(name).tolist() for name in self.tuned},
            "converged": self.converged,
            "tolerance": self.hparams.tolerance,
            "validation_steps": self.hparams.validation_steps,
            "wall_time_s": time.perf_counter() - self.started,
        }

    def figures(self) -> dict[str, plt.Figure]:
        """Raster (first 100 neurons, first 2,000 validation steps) and rate histogram."""
        spikes = self.last_spikes
        dt = float(self.model.dt)
        raster, axis = plt.subplots(figsize=(8, 4))
        step, neuron = spikes[:2000, :100].nonzero(as_tuple=True)
        axis.scatter(step.cpu() * dt, neuron.cpu(), s=1, c="k")
        axis.set(xlabel="time (ms)", ylabel="neuron", title="validation raster")
        histogram, axis = plt.subplots(figsize=(5, 4))
        axis.hist((spikes.mean(dim=0) / dt * 1000).cpu(), bins=30)
        axis.set(xlabel="firing rate (Hz)", ylabel="neurons", title="validation rates")
        return {"raster": raster, "rate_histogram": histogram}

    def on_fit_end(self) -> None:
        log_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # collective
        if not self.trainer.is_global_zero or self.last_spikes is None:
            return
        log_dir.mkdir(parents=True, exist_ok=True)
        for name, figure in self.figures().items():
            figure.savefig(log_dir / f"{name}.png", dpi=120, bbox_inches="tight")
            if hasattr(self.logger, "experiment") and hasattr(self.logger.experiment,
                                                              "add_figure"):
                self.logger.experiment.add_figure(name, figure, self.global_step)
            plt.close(figure)
        summary = self.summary()
        (log_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        achieved = ", ".join(f"{k} {torch.tensor(self.achieved[k]).mean():.3f} Hz (target "
                             f"{torch.tensor(v).mean():g})" for k, v in self.target_rates.items())
        parameters = ", ".join(f"{k} = {torch.tensor(v).mean():.4g}"
                               + (" (mean)" if isinstance(v, list) else "")
                               for k, v in summary["parameters"].items())
        print(f"\nspikefit calibration: {achieved} on {self.hparams.validation_steps} fresh "
              f"steps: {'converged' if summary['converged'] else 'NOT converged'}; "
              f"{parameters}; {summary['wall_time_s']:.1f} s\nsummary: {log_dir / 'summary.json'}")
