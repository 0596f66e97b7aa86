"""Covariates: samples read from .npz and NWB files are resampled to the bin centres, chunks
carry them with their history, a covariate impulse moves the input causally (from the next
bin, or from its own with the current bin), and a fit recovers known covariate filters and
writes them to fitted_filters.npz."""

from __future__ import annotations

from datetime import datetime, timezone

import lightning as L
import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from spikefit.data import SpikeTrainDataModule
from spikefit.io import Recording, write_spike_times
from spikefit.io.covariates import read_covariates
from spikefit.models import FilterGLM
from spikefit.models.bases import RaisedCosineLinear
from spikefit.tasks import LikelihoodFit
from spikefit.tasks.likelihood.objective import forced_input
from spikefit.tasks.solvers import LBFGS, Newton
from tests import QUIET

#: Each unit's weights on 3 log raised cosines over 20 ms: excited, suppressed, biphasic,
#: none (4 units: with as many units as basis functions a shared [3] would read as per unit).
TRUE_WEIGHTS = [[0.12, 0.05, 0.02], [-0.1, -0.04, 0.0], [0.1, -0.06, -0.02], [0.0, 0.0, 0.0]]


def bins_of(n_bins: int, dt_ms: float = 5.0, t_start_s: float = 0.0) -> Recording:
    return Recording(torch.ones(1, n_bins), dt_ms, [0], t_start_s)


def test_samples_are_interpolated_at_the_bin_centres(tmp_path):
    path = tmp_path / "cov.npz"
    np.savez(path, covariate_speed=[0.0, 2.0], covariate_speed_times=[0.0, 0.02])
    speed = read_covariates(path, ["speed"], bins_of(4))  # centres 2.5, 7.5, 12.5, 17.5 ms
    assert torch.allclose(speed, torch.tensor([[0.25, 0.75, 1.25, 1.75]]))
    later = read_covariates(path, ["speed"], bins_of(2, t_start_s=0.005))
    assert torch.allclose(later, torch.tensor([[0.75, 1.25]]))
    scored = read_covariates(path, ["speed"], bins_of(4), standardize=True)
    assert torch.allclose(scored, (speed - 1.0) / np.sqrt(0.3125))


def test_an_nwb_time_series_by_rate_is_read_like_its_samples(tmp_path):
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries

    nwb = NWBFile(
        session_description="covariates",
        identifier="id",
        session_start_time=datetime.now(timezone.utc),
    )
    nwb.add_acquisition(
        TimeSeries(name="light", data=np.arange(5.0) * 2, unit="mW", rate=200.0, starting_time=0.0)
    )
    with NWBHDF5IO(str(tmp_path / "c.nwb"), "w") as io:
        io.write(nwb)
    light = read_covariates(tmp_path / "c.nwb", ["light"], bins_of(4))  # 2 per 5 ms
    assert torch.allclose(light, torch.tensor([[1.0, 3.0, 5.0, 7.0]]))


def test_chunks_carry_the_covariates_of_their_bins_and_history(tmp_path):
    n_bins = 100
    centres = (np.arange(n_bins) + 0.5) / 1000
    np.savez(tmp_path / "c.npz", covariate_x=np.arange(n_bins), covariate_x_times=centres)
    module = SpikeTrainDataModule(
        spikes=torch.zeros(2, n_bins),
        covariates=["x"],
        covariate_path=str(tmp_path / "c.npz"),
        chunk_bins=30,
        history_bins=7,
    )
    module.setup()
    assert module.n_covariates == 1
    for chunk in next(iter(module.train_dataloader())):
        columns = chunk["spikes"].shape[1]
        expected = torch.arange(chunk["start"], chunk["start"] + columns).float()
        assert torch.equal(chunk["covariates"][0], expected)


def test_covariates_come_from_the_recording_file_by_default_and_after_t_start(tmp_path):
    path = write_spike_times(tmp_path / "rec.npz", torch.ones(2, 10), dt_ms=100.0)
    with np.load(path) as archive:
        arrays = dict(archive)
    np.savez(path, **arrays, covariate_x=[0.0, 10.0], covariate_x_times=[0.0, 1.0])
    module = SpikeTrainDataModule(path=str(path), dt_ms=100.0, t_start_s=0.2, covariates=["x"])
    module.setup()
    assert torch.allclose(module.covariates, torch.arange(2.5, 10.0, 1.0).unsqueeze(0))


@pytest.mark.parametrize("current", [False, True])
def test_a_covariate_impulse_moves_the_input_from_the_next_bin_or_its_own(current):
    basis = RaisedCosineLinear(2, 3)
    glm = FilterGLM(
        b=0.0,
        n_covariates=2,
        covariate_basis=basis,
        covariate_weights=[1.0, -2.0, 0.5, 3.0],
        include_current_bin=current,
    )
    impulse = torch.zeros(1, 2, 12)
    impulse[0, 1, 5] = 1.0  # covariate 1 in bin 5
    filter_1 = torch.tensor([0.5, 3.0]) @ basis()  # f(τ) of covariate 1
    expected = torch.zeros(12)
    first = 5 if current else 6
    expected[first : first + 3] = filter_1
    assert torch.allclose(glm.covariate_input(impulse)[0, 0], expected)
    chunk = {"spikes": torch.zeros(1, 12), "start": 0, "bins": 8, "covariates": impulse[0]}
    network = Data(edge_index=torch.zeros(2, 0, dtype=torch.long), W0=torch.zeros(0, 8))
    forced = forced_input(glm, chunk, network, None, None)  # the last 8 bins, teacher forced
    assert torch.allclose(forced[:, 0], expected[-8:])


def simulated(tmp_path, n_bins: int = 40_000) -> tuple[torch.Tensor, str]:
    """Poisson spikes of 4 uncoupled units driven by a smooth covariate through the true
    filters, and the covariate's file (samples at the bin centres)."""
    generator = np.random.default_rng(0)
    noise = generator.standard_normal(n_bins + 50)
    smooth = np.convolve(noise, np.exp(-np.arange(50) / 8.0), mode="valid")[:n_bins]
    x = (smooth - smooth.mean()) / smooth.std()
    path = tmp_path / "covariate.npz"
    np.savez(path, covariate_x=x, covariate_x_times=(np.arange(n_bins) + 0.5) / 1000)
    truth = FilterGLM(
        n_basis=3, n_covariates=1, covariate_window_ms=20, covariate_weights=TRUE_WEIGHTS
    )
    drive = truth.covariate_input(torch.tensor(x, dtype=torch.float32).view(1, 1, -1))[0]
    rates = torch.exp(-3.0 + drive)  # spikes per 1-ms bin
    return torch.poisson(rates, torch.Generator().manual_seed(1)), str(path)


@pytest.mark.parametrize("solver", [Newton, LBFGS])
def test_a_fit_recovers_the_covariate_filters_and_writes_them(solver, tmp_path):
    spikes, path = simulated(tmp_path)
    glm = FilterGLM(
        emission="poisson", window_ms=10, n_basis=3, n_covariates=1, covariate_window_ms=20
    )
    task = LikelihoodFit(
        glm,
        per_neuron=["b", "self_weights", "covariate_weights"],
        coupling="none",
        solver=solver(),
    )
    module = SpikeTrainDataModule(spikes=spikes, covariates=["x"], covariate_path=path)
    L.Trainer(max_epochs=30, default_root_dir=tmp_path, **QUIET).fit(task, module)
    true = torch.tensor(TRUE_WEIGHTS) @ glm.covariate_basis()
    fitted = task.model.covariate_filters().detach()[:, 0]
    error = (fitted - true).abs().max() / true.abs().max()
    assert error < 0.25, error
    arrays = np.load(tmp_path / "fitted_filters.npz")
    np.testing.assert_allclose(arrays["covariate_filters"][:, 0], fitted.numpy(), rtol=1e-5)
    assert arrays["covariate_weights"].shape == (4, 1, 3)
    np.testing.assert_allclose(arrays["covariate_lag_ms"], np.arange(1, 21))
    summary = task.summary()
    assert np.shape(summary["parameters"]["covariate_weights"]) == (4, 3)
    assert "skipped" in summary["posterior_predictive"]
    figure = task.figures()["covariate_filters"]
    assert [axes.get_title() for axes in figure.axes if axes.get_visible()] == ["x"]
