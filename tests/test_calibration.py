"""Calibration: teacher-forced inputs, targets reached on fresh simulation, CLI, DDP, resume."""

import json
import math
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from spikefit.cli import main
from spikefit.data import NetworkDataModule
from spikefit.datasets import NormalGenerator
from spikefit.models import BernoulliGLM, PoissonGLM, RectifiedSAM, ThresholdSAM
from spikefit.stimulus import RegularStimulus
from spikefit.tasks import RateCalibration
from spikefit.tasks.calibration import SEED_INTRODUCTION
from tests.test_models import PAPER, ForcedBernoulli, batch_of_networks

CONFIGS = Path(__file__).parent.parent / "configs"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def run_cli(tmp_path: Path, *args: str) -> dict:
    """Runs ``python -m spikefit fit`` in this process; returns its summary.json."""
    main(["fit", *args, "--trainer.default_root_dir", str(tmp_path), *QUIET])
    newest = max(tmp_path.rglob("summary.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(newest.read_text())


def assert_targets_met(summary: dict, tolerance: float = 0.02) -> None:
    assert summary["converged"]
    for name, target in summary["targets"].items():
        achieved = torch.tensor(summary["achieved_rate_hz"][name]).mean().item()
        assert achieved == pytest.approx(torch.tensor(target).mean().item(), rel=tolerance)


def test_teacher_forced_inputs_equal_engine_inputs():
    data = batch_of_networks()
    raster = (torch.rand(80, 300, generator=torch.Generator().manual_seed(4)) < 0.1).float()
    model = ForcedBernoulli(raster)
    model.add_stimulus(RegularStimulus(strength=3.0, period=7, tau=2, stop=300,
                                       stimulus_masks=torch.arange(80) % 3 == 0))
    model.simulate(data, 300, seed=5, equilibration_steps=0, verbose=False)
    engine_inputs = torch.stack(model.inputs).t()[:, 20:]  # the engine's history starts earlier
    teacher_forced = model.input_from_spikes(data, raster.unsqueeze(0))[0, :, 20:]
    assert torch.allclose(engine_inputs, teacher_forced, atol=1e-4)


def test_activation_from_spikes_follows_the_update_rule():
    model = RectifiedSAM(**PAPER[RectifiedSAM])
    spikes = (torch.rand(2, 3, 400, generator=torch.Generator().manual_seed(0)) < 0.2).float()
    activation, expected = torch.zeros(2, 3), []
    for step in range(400):
        expected.append(activation.clone())  # the input of a step sees the activation before it
        activation = model.update_activation(spikes[..., step], activation)
    assert torch.allclose(model.presynaptic_trace(spikes), torch.stack(expected, -1), atol=1e-5)


@pytest.mark.parametrize("config", ["default", "rectified_lnp_ring", "sin_stimulus_amplitude",
                                    "populations"])
def test_shipped_configs_reach_their_targets(tmp_path, config):
    summary = run_cli(tmp_path, "--config", str(CONFIGS / f"{config}.yaml"))
    assert summary["task"] == "calibration" and summary["validation_steps"] >= 10_000
    assert set(summary) >= {"targets", "achieved_rate_hz", "parameters", "converged",
                            "wall_time_s"}
    assert_targets_met(summary)
    run = next(tmp_path.rglob("summary.json")).parent
    assert {"raster.png", "rate_histogram.png", "config.yaml"} <= {p.name for p in run.iterdir()}
    assert list(run.glob("events.out.tfevents.*")) and list(run.glob("checkpoints/*.ckpt"))


@pytest.mark.parametrize("model, tune, target, lr", [
    (PoissonGLM(**{**PAPER[PoissonGLM], "T": 50}), ["b"], 20.0, 0.01),
    (RectifiedSAM(**{**PAPER[RectifiedSAM], "b": 0.02}), ["b"], 10.0, 0.002),
    (ThresholdSAM(**{**PAPER[ThresholdSAM], "r": 0.0002}), ["b"], 40.0, 1e-5),
], ids=["PoissonGLM", "RectifiedSAM", "ThresholdSAM"])
def test_every_model_calibrates(tmp_path, model, tune, target, lr):
    task = RateCalibration(model, tune=tune, target_rate_hz=target, lr=lr, n_trials=2,
                           window_steps=300)
    data = NetworkDataModule(NormalGenerator(20, 0, 1, glorot=True, seed=0), n_networks=4,
                             batch_size=4)
    trainer = L.Trainer(max_epochs=150, check_val_every_n_epoch=5, num_sanity_val_steps=0,
                        default_root_dir=tmp_path, enable_progress_bar=False,
                        enable_model_summary=False, logger=False, enable_checkpointing=False)
    trainer.fit(task, data)
    assert_targets_met(task.summary())


def test_per_neuron_targets_with_per_neuron_thresholds(tmp_path):
    rates = [5.0] * 10 + [20.0] * 10
    task = RateCalibration(BernoulliGLM(**SEED_INTRODUCTION), tune=["theta"],
                           per_neuron=["theta"], target_rate_hz=None, neuron_rates_hz=rates,
                           n_trials=8, tolerance=0.05)
    data = NetworkDataModule(NormalGenerator(20, 0, 5, glorot=True, seed=1), n_networks=1,
                             batch_size=1)
    trainer = L.Trainer(max_epochs=150, check_val_every_n_epoch=5, num_sanity_val_steps=0,
                        default_root_dir=tmp_path, enable_progress_bar=False,
                        enable_model_summary=False, logger=False, enable_checkpointing=False)
    trainer.fit(task, data)
    achieved = torch.tensor(task.achieved["per_neuron"])
    assert task.model.theta.shape == (20,)
    assert achieved[:10].mean() == pytest.approx(5.0, rel=0.1)
    assert achieved[10:].mean() == pytest.approx(20.0, rel=0.1)
    assert task.model.theta[:10].mean() > task.model.theta[10:].mean()  # quieter = higher θ


def test_ddp_two_processes_match_one(tmp_path):
    args = ["--model.validation_steps", "10000", "--trainer.max_epochs", "200",
            "--trainer.check_val_every_n_epoch", "5", *QUIET]
    results = {}
    for devices in (1, 2):
        root = tmp_path / f"devices{devices}"
        command = [sys.executable, "-m", "spikefit", "fit", "--trainer.devices", str(devices),
                   "--trainer.strategy", "ddp" if devices == 2 else "auto",
                   "--trainer.default_root_dir", str(root), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        results[devices] = json.loads(next(root.rglob("summary.json")).read_text())
    for summary in results.values():
        assert_targets_met(summary)
    theta = [results[d]["parameters"]["theta"] for d in (1, 2)]
    assert theta[0] == pytest.approx(theta[1], abs=0.05)


def test_resume_from_last_checkpoint(tmp_path):
    first = ["--trainer.max_epochs", "3", "--trainer.check_val_every_n_epoch", "3",
             "--model.validation_steps", "10000"]
    run_cli(tmp_path, *first)
    checkpoint = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=False)
    assert checkpoint["epoch"] == 2
    run_cli(tmp_path, "--trainer.max_epochs", "6", "--trainer.check_val_every_n_epoch", "3",
            "--model.validation_steps", "10000", "--ckpt_path", "last")
    resumed = max(tmp_path.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    assert torch.load(resumed, weights_only=False)["global_step"] == 6  # 3 + 3, not 6 + 6


@pytest.mark.parametrize("args, message", [
    (["--model.tune", "[nonexistent]"], "nonexistent"),
    (["--model.tune", "[lambda_0]"], "not among the parameters of BernoulliGLM"),
    (["--model.target_rate_hz", "-3"], "positive finite"),
    (["--model.target_rate_hz", ".inf"], "positive finite"),
    (["--data.root", "/nonexistent/networks"], "/nonexistent/networks"),
    (["--config", str(CONFIGS / "rectified_lnp_ring.yaml"), "--model.model.init_args.r",
      "-5000"], "exploded"),
    (["--model.lr", ".nan"], "Invalid learning rate: nan"),
])
def test_cli_errors_are_one_line_with_exit_2(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--trainer.max_epochs", "2", "--trainer.default_root_dir",
              str(tmp_path), *QUIET])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_cli_missing_config_file_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(tmp_path / "missing.yaml")])
    assert exit_info.value.code == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_calibration_rejects_bad_arguments():
    with pytest.raises(ValueError, match="population_rates_hz.inhibitory"):
        RateCalibration(BernoulliGLM(**SEED_INTRODUCTION),
                        population_rates_hz={"inhibitory": math.nan})
    with pytest.raises(ValueError, match="per_neuron"):
        RateCalibration(BernoulliGLM(**SEED_INTRODUCTION), per_neuron=["r"])


class NaNRates(BernoulliGLM):
    def expected_spikes(self, input):
        return input * math.nan


def test_non_finite_loss_stops_the_run(tmp_path):
    task = RateCalibration(NaNRates(**SEED_INTRODUCTION), window_steps=50, n_trials=1)
    trainer = L.Trainer(max_epochs=3, default_root_dir=tmp_path, enable_progress_bar=False,
                        enable_model_summary=False, logger=False, enable_checkpointing=False)
    with pytest.raises(FloatingPointError, match="loss became nan at step 0"):
        trainer.fit(task, NetworkDataModule(n_networks=2, batch_size=2))
    assert torch.isfinite(task.model.theta).all()  # no NaN parameters left behind
