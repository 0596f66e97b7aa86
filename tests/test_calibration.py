"""Calibration: teacher-forced inputs, convergence to the target on fresh simulation, CLI."""

import json
import subprocess
import sys

import pytest
import torch

from spikefit.data import NetworkDataModule
from spikefit.models import BernoulliGLM
from spikefit.stimulus import RegularStimulus
from spikefit.tasks import RateCalibration
from spikefit.tasks.calibration import SEED_INTRODUCTION
from tests.test_models import ForcedBernoulli, batch_of_networks


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


def test_calibration_reaches_target_on_fresh_simulation(tmp_path):
    import lightning as L

    task = RateCalibration(BernoulliGLM(**SEED_INTRODUCTION), tune=["theta"],
                           target_rate_hz=10.0, window_steps=300, n_trials=2,
                           validation_steps=10_000, lr=0.05)
    data = NetworkDataModule(n_networks=10, batch_size=10)
    trainer = L.Trainer(max_epochs=200, check_val_every_n_epoch=5, num_sanity_val_steps=0,
                        default_root_dir=tmp_path, enable_progress_bar=False,
                        enable_model_summary=False, logger=False, enable_checkpointing=False)
    trainer.fit(task, data)
    assert task.converged
    assert task.achieved["global"] == pytest.approx(10.0, rel=0.02)
    spikes = task.model.simulate(data.networks[0], 20_000, seed=99, verbose=False)
    assert spikes.float().mean().item() * 1000 == pytest.approx(10.0, rel=0.06)  # one network


def test_calibration_rejects_bad_targets_and_names():
    with pytest.raises(ValueError, match="positive finite"):
        RateCalibration(BernoulliGLM(**SEED_INTRODUCTION), target_rate_hz=-1.0)
    with pytest.raises(ValueError, match="not among the parameters"):
        RateCalibration(BernoulliGLM(**SEED_INTRODUCTION), tune=["lambda_0"])


def test_cli_writes_summary_and_fails_cleanly(tmp_path):
    command = [sys.executable, "-m", "spikefit", "fit", "--trainer.max_epochs", "5",
               "--trainer.check_val_every_n_epoch", "5", "--model.validation_steps", "2000",
               "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar",
               "false"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary_path = next(tmp_path.rglob("summary.json"))
    summary = json.loads(summary_path.read_text())
    assert summary["task"] == "calibration" and summary["targets"] == {"global": 10.0}
    assert set(summary) >= {"achieved_rate_hz", "parameters", "converged", "wall_time_s"}
    assert "theta" in summary["parameters"]
    bad = subprocess.run([*command, "--model.tune", "[nonexistent]"], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2
    assert "nonexistent" in bad.stderr and "Traceback" not in bad.stderr
