"""Firing-rate calibration: tune model parameters so simulated networks hit a target rate."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import lightning as L
import torch
from jsonargparse import lazy_instance
from torch_geometric.data import Data

from spikefit.models import BaseModel, BernoulliGLM, SAModel

SEED_INTRODUCTION = dict(alpha=0.2, beta=0.5, abs_ref_scale=3, rel_ref_scale=7,
                         abs_ref_strength=-100, rel_ref_strength=-30, coupling_window=5,
                         theta=5, r=1, dt=1)
#: The default model of the CLI: the seed introduction's BernoulliGLM.
DEFAULT_MODEL = lazy_instance(BernoulliGLM, **SEED_INTRODUCTION)


class RateCalibration(L.LightningModule):
    r"""Tunes parameters of ``model`` so its networks fire at ``target_rate_hz``.

    Each training step simulates ``window_steps`` steps (after equilibration) of a batch of
    networks and ``n_trials`` trials without gradients, then recomputes the inputs of those
    steps from the simulated spikes with gradients (teacher forcing) and minimises

    .. math::
        \mathcal{L} = \left(\frac{\bar\mu / \Delta t - \nu^*}{\nu^*}\right)^2,
        \qquad \bar\mu = \langle \mathrm{non\_linearity}(g_i(t)) \rangle_{i,t,k}

    where :math:`\bar\mu` is the expected spike count per step given the history. Because
    :math:`E[X \mid \text{history}] = \mu`, the loss is zero exactly where the true rate equals
    the target, while the gradient (which ignores how the history itself depends on the
    parameters) has low variance — unlike score-function estimators, and unlike a
    straight-through gradient of the sampled spikes, which is biased at its fixed point.

    Achieved rates are measured on a fresh simulation (another seed, ``validation_steps``
    steps); training stops once they are within ``tolerance`` of the target.

    Args:
        model: the spiking network model (default: the seed introduction BernoulliGLM).
        tune: names of the model's parameters to tune.
        target_rate_hz: target mean firing rate, in Hz.
        window_steps: steps simulated per training step.
        equilibration_steps: steps run before each window.
        n_trials: trials per network and step.
        lr: Adam learning rate.
        lr_decay: multiplicative learning-rate decay per step.
        tolerance: relative error of the validation rate counted as converged.
        validation_steps: steps of the fresh validation simulation.
        seed: base seed of all simulations.
    """

    def __init__(self, model: BaseModel = DEFAULT_MODEL,
                 tune: list[str] | None = None, target_rate_hz: float = 10.0,
                 window_steps: int = 500, equilibration_steps: int = 100, n_trials: int = 4,
                 lr: float = 0.05, lr_decay: float = 0.98, tolerance: float = 0.02,
                 validation_steps: int = 10_000, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        tune = tune if tune is not None else ["theta"]
        if isinstance(model, SAModel):
            raise ValueError(f"calibration of {type(model).__name__} (synaptic-activation "
                             f"models) is not implemented yet; use a GLM or LNP model")
        if not (math.isfinite(target_rate_hz) and target_rate_hz > 0):
            raise ValueError(f"target_rate_hz must be a positive finite rate in Hz, "
                             f"got {target_rate_hz}")
        available = model.tunable_parameters
        unknown = [name for name in tune if name not in available]
        if unknown or not tune:
            raise ValueError(f"tune: {unknown or tune} not among the parameters of "
                             f"{type(model).__name__}: {sorted(available)}")
        self.model = model
        self.model.requires_grad_(False)
        for name in tune:
            available[name].requires_grad_(True)
        self.tuned = tune
        self.started = time.perf_counter()
        self.achieved_rate_hz = math.nan

    def simulate(self, batch: Data, steps: int, seed: int) -> torch.Tensor:
        """Spikes [K, N, S] of ``steps`` steps plus the history window, without gradients."""
        spikes = self.model.simulate(batch, steps + self.model.window, seed=seed,
                                     n_trials=self.hparams.n_trials, verbose=False,
                                     equilibration_steps=self.hparams.equilibration_steps,
                                     store_as_dtype=torch.float32)
        return spikes.view(batch.num_nodes, -1, self.hparams.n_trials).permute(2, 0, 1)

    def training_step(self, batch: Data, batch_idx: int) -> torch.Tensor:
        seed = self.hparams.seed + 7919 * self.global_step + 104729 * self.global_rank
        spikes = self.simulate(batch, self.hparams.window_steps, seed)
        g = self.model.input_from_spikes(batch, spikes)[..., self.model.window:]
        rate_hz = self.model.non_linearity(g).mean() / self.model.dt * 1000
        target = self.hparams.target_rate_hz
        loss = ((rate_hz - target) / target) ** 2
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the calibration loss became {loss.item()} at step "
                                     f"{self.global_step}: lower lr or check the model")
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.num_graphs)
        self.log("train/rate_hz", rate_hz, prog_bar=True, batch_size=batch.num_graphs)
        for name in self.tuned:
            value = self.model.get_parameter(name)
            self.log(f"param/{name}", value.mean(), batch_size=batch.num_graphs)
        return loss

    def validation_step(self, batch: Data, batch_idx: int) -> None:
        spikes = self.simulate(batch, self.hparams.validation_steps,
                               seed=self.hparams.seed + 1_000_003 + self.global_rank)
        rate_hz = spikes[..., self.model.window:].mean() / self.model.dt * 1000
        self.log("val/rate_hz", rate_hz, sync_dist=True, batch_size=batch.num_graphs)

    def on_validation_epoch_end(self) -> None:
        self.achieved_rate_hz = float(self.trainer.callback_metrics["val/rate_hz"])
        if self.converged and not self.trainer.sanity_checking:
            self.trainer.should_stop = True

    @property
    def converged(self) -> bool:
        target = self.hparams.target_rate_hz
        return abs(self.achieved_rate_hz - target) <= self.hparams.tolerance * target

    def configure_optimizers(self):
        optimizer = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad],
                                     lr=self.hparams.lr)
        decay = torch.optim.lr_scheduler.ExponentialLR(optimizer, self.hparams.lr_decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": decay, "interval": "step"}}

    def summary(self) -> dict:
        """What the run achieved, as written to ``summary.json``."""
        return {
            "task": "calibration",
            "model": type(self.model).__name__,
            "targets": {"rate_hz": self.hparams.target_rate_hz},
            "achieved_rate_hz": {"global": self.achieved_rate_hz},
            "parameters": {name: self.model.get_parameter(name).tolist() for name in self.tuned},
            "converged": self.converged,
            "tolerance": self.hparams.tolerance,
            "validation_steps": self.hparams.validation_steps,
            "wall_time_s": time.perf_counter() - self.started,
        }

    def on_fit_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        summary = self.summary()
        log_dir = Path(self.trainer.log_dir or ".")
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        parameters = ", ".join(f"{k} = {v}" for k, v in summary["parameters"].items())
        print(f"\nspikefit calibration: target {summary['targets']['rate_hz']:g} Hz, achieved "
              f"{summary['achieved_rate_hz']['global']:.3f} Hz on {self.hparams.validation_steps}"
              f" fresh steps ({'converged' if summary['converged'] else 'NOT converged'}); "
              f"{parameters}; {summary['wall_time_s']:.1f} s\nsummary: {log_dir / 'summary.json'}")
