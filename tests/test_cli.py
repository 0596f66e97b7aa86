"""`python -m spikefit simulate`: spikes and true connectivity written for later fits."""

import json

import numpy as np
import pytest

from spikefit.cli import main
from spikefit.datasets import NormalGenerator
from spikefit.io import read_recording


@pytest.mark.parametrize("output", ["spikes.npz", "raster.npy", "phy"])
def test_simulate_writes_spikes_and_true_connectivity(tmp_path, output):
    main(
        [
            "simulate",
            "--n_steps",
            "3000",
            "--seed",
            "4",
            "--output",
            str(tmp_path / output),
            "--generator.init_args.n_neurons",
            "20",
            "--generator.init_args.seed",
            "9",
        ]
    )
    weights = np.load(tmp_path / ("phy" if output == "phy" else "") / "W0.npy")
    expected = NormalGenerator(20, mean=0.0, std=5.0, glorot=True, seed=9).generate_W0()
    assert np.array_equal(weights, expected.numpy())  # dense [pre, post]
    recording = read_recording(tmp_path / output, dt_ms=1.0, min_rate_hz=0.1)
    assert recording.n_bins == 3000 or output != "raster.npy"
    assert 2 < recording.spikes.mean().item() * 1000 < 20  # the seed example's few Hz


def test_simulate_refuses_to_overwrite_and_rejects_unknown_formats(tmp_path, capsys):
    args = ["simulate", "--n_steps", "200", "--generator.init_args.n_neurons", "10"]
    main([*args, "--output", str(tmp_path / "a.npz")])
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--output", str(tmp_path / "a.npz")])
    assert exit_info.value.code == 2 and "exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--output", str(tmp_path / "b.csv"), "--overwrite", "true"])
    assert "output: '.csv' is not a choice" in capsys.readouterr().err


CONFIGS = __import__("pathlib").Path(__file__).parent.parent / "configs"


def test_simulate_then_fit_configs_round_trip(tmp_path, monkeypatch):

    monkeypatch.chdir(tmp_path)  # the configs use paths relative to the working directory
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    main(["simulate", "--config", str(CONFIGS / "simulate_bernoulli.yaml"), "--n_steps", "30000"])
    main(["fit", "--config", str(CONFIGS / "fit_bernoulli_coupling.yaml"), *quiet])
    run = next(tmp_path.rglob("summary.json")).parent
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "likelihood"
    assert set(summary["log_likelihood_per_bin"]) == {"train", "heldout"}
    assert summary["edge_auroc"] > 0.6  # well above chance (0.5) from 24,000 training bins
    assert np.load(run / "fitted_W0.npy").shape == (50, 50)

    main(
        [
            "simulate",
            "--config",
            str(CONFIGS / "simulate_bernoulli.yaml"),
            "--n_steps",
            "30000",
            "--output",
            "recordings/phy",
        ]
    )
    main(["fit", "--config", str(CONFIGS / "fit_phy.yaml"), *quiet])
    newest = max(tmp_path.rglob("summary.json"), key=lambda p: p.stat().st_mtime)
    summary = json.loads(newest.read_text())
    assert summary["log_likelihood_per_bin"]["heldout"] < 0 and summary["bits_per_spike"]


def test_help_lists_both_commands_and_the_default_tasks_options(capsys):
    main(["--help"])
    overview = capsys.readouterr().out
    assert "usage: python -m spikefit {fit,simulate}" in overview
    assert "simulate   simulate a model" in overview and "fit        calibrate" in overview
    main(["fit", "--help"])
    fit_help = capsys.readouterr().out
    assert fit_help.startswith("usage: python -m spikefit [options] fit")
    for option in (
        "--trainer.max_epochs",
        "--model.target_rate_hz",
        "--model.tune",
        "--data.n_networks",
        "--ckpt_path",
    ):
        assert option in fit_help
    assert "{fit,validate,test,predict}" not in overview + fit_help
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--help"])
    assert exit_info.value.code == 0
    assert "usage: python -m spikefit simulate" in capsys.readouterr().out


def test_the_tasks_import_from_the_top_level_lazily():
    import subprocess
    import sys

    code = (
        "import sys, spikefit; assert 'lightning' not in sys.modules; "
        "from spikefit import RateCalibration, LikelihoodFit, NetworkDataModule, "
        "SpikeTrainDataModule; from spikefit.tasks import RateCalibration as R; "
        "assert RateCalibration is R and 'lightning' in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_recording_config_needs_only_the_recording(tmp_path, monkeypatch):
    """configs/fit_recording.yaml on a spike-times npz given by --data.path alone (fewer solver
    iterations, to be quick): the penalty chosen on the last sixth of the training span, the
    learned filters, the connection calls and the check."""
    monkeypatch.chdir(tmp_path)
    main(["simulate", "--n_steps", "20000", "--seed", "3", "--output", "recording.npz",
          "--generator.init_args.n_neurons", "12"])  # fmt: skip
    config = str(CONFIGS / "fit_recording.yaml")
    quick = ["--model.solver.init_args.max_iter", "30", "--trainer.enable_progress_bar", "false"]
    main(["fit", "--config", config, "--data.path", "recording.npz", *quick])
    run = next(tmp_path.rglob("summary.json")).parent
    summary = json.loads((run / "summary.json").read_text())
    assert summary["bits_per_spike"]["heldout"] > 0
    assert set(summary["connections"]) == {"excitatory", "inhibitory", "none", "fdr"}
    assert "stable" in summary["posterior_predictive"]
    assert summary["cross_validation"]["folds"] == [[12500, 15000]]  # the last sixth
    assert len(summary["cross_validation"]["chosen_strength"]) == 12
    filters = np.load(run / "fitted_filters.npz")
    assert filters["coupling_basis"].shape == (8, 100)
    assert (run / "connections.csv").is_file()
