"""`python -m spikefit simulate`: spikes and true connectivity written for later fits."""

import numpy as np
import pytest

from spikefit.cli import main
from spikefit.datasets import NormalGenerator
from spikefit.io import read_recording


@pytest.mark.parametrize("output", ["spikes.npz", "raster.npy", "phy"])
def test_simulate_writes_spikes_and_true_connectivity(tmp_path, output):
    main(["simulate", "--n_steps", "3000", "--seed", "4", "--output", str(tmp_path / output),
          "--generator.init_args.n_neurons", "20", "--generator.init_args.seed", "9"])
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
    assert "unknown format '.csv'" in capsys.readouterr().err
