"""What a likelihood fit leaves behind: its filters in time, a model and network that simulate
back (from Python and the command line), and a posterior-predictive check that compares a
seeded simulation of the fitted network with the recording and reports a network that runs
away instead of crashing."""

from __future__ import annotations

import csv
import json

import lightning as L
import numpy as np
import pytest
import torch

from spikefit.cli import main
from spikefit.data import SpikeTrainDataModule
from spikefit.datasets import graph_to_dense, load_network
from spikefit.models import BernoulliGLM, FilterGLM
from spikefit.models.bases import RaisedCosineLog
from spikefit.tasks import LikelihoodFit, Newton
from spikefit.tasks.likelihood import predictive
from tests import QUIET
from tests.test_filter_glm import TRUE_SELF, network
from tests.test_likelihood import TINY_GLM

#: A FilterGLM at Δt = 0.5 ms with 4 functions over 15 ms (30 steps) on both bases, r = 0.5.
GLM = dict(dt=0.5, window_ms=15, n_basis=4, r=0.5)
STEPS, TRAIN = 20_000, 16_000  # recorded bins, of which the first 80% are fitted


def fit_filter_glm(
    root, emission: str = "bernoulli", callbacks=(), epochs: int = 5, steps: int = STEPS
):
    """A FilterGLM fitted (b, post-spike filters and the graph's coupling) to ``steps`` bins
    of 8 neurons simulated from known filters; the task, the recording and its network."""
    data = network(8)
    truth = FilterGLM(**GLM, emission=emission, b=-3.5, self_weights=TRUE_SELF)
    spikes = truth.simulate(data, steps, seed=3, verbose=False)
    task = LikelihoodFit(
        FilterGLM(**GLM, emission=emission),
        per_neuron=["b", "self_weights"],
        coupling="graph",
        solver=Newton(),
    )
    module = SpikeTrainDataModule(spikes=spikes, network=data, dt_ms=0.5)
    trainer = L.Trainer(
        max_epochs=epochs, default_root_dir=root, callbacks=list(callbacks), **QUIET
    )
    trainer.fit(task, module)
    return task, spikes, data


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    task, spikes, data = fit_filter_glm(run)
    return task, spikes, data, run


def test_the_filters_in_time_are_the_weights_on_the_bases(fitted):
    task, _, data, run = fitted
    arrays = np.load(run / "fitted_filters.npz")
    basis = RaisedCosineLog(4, 30)().numpy()  # both bases: 4 functions over 30 steps
    self_weights = task.model.self_weights.detach().numpy()  # [N, 4], one filter per neuron
    coupling_weights = task.coupling_weights.detach().numpy()  # [E, 4]
    assert self_weights.shape == (8, 4) and coupling_weights.shape == (data.num_edges, 4)
    np.testing.assert_allclose(arrays["self_basis"], basis, atol=1e-7)
    np.testing.assert_allclose(arrays["coupling_basis"], basis, atol=1e-7)
    np.testing.assert_array_equal(arrays["self_weights"], self_weights)
    np.testing.assert_array_equal(arrays["coupling_weights"], coupling_weights)
    np.testing.assert_array_equal(arrays["edge_index"], data.edge_index.numpy())
    np.testing.assert_allclose(arrays["self_filters"], self_weights @ basis, atol=1e-5)
    np.testing.assert_allclose(
        arrays["coupling_filters"], 0.5 * coupling_weights @ basis, atol=1e-5
    )
    np.testing.assert_allclose(arrays["lag_ms"], 0.5 * np.arange(1, 31))  # (τ + 1) Δt
    assert arrays["dt"] == 0.5
    for name in ("post_spike_filters", "coupling_filters", "predictive_rates", "predictive_isi"):
        assert (run / f"{name}.png").stat().st_size > 0
    assert (run / "predictive_ccg.png").stat().st_size > 0


def test_the_fitted_network_simulates_back_from_python_and_the_command_line(fitted, tmp_path):
    _, spikes, data, run = fitted
    model = FilterGLM(**{**GLM, "r": 1.0})  # the saved r (and everything fitted) is loaded
    model.load(run / "fitted_model.pt")
    fitted_network = load_network(run / "fitted_network.pt")
    assert float(model.r) == 0.5 and model.b.shape == (8,) and model.self_weights.shape == (8, 4)
    assert torch.equal(fitted_network.edge_index, data.edge_index)
    assert fitted_network.W0.shape == (data.num_edges, 4)
    simulated = model.simulate(fitted_network, STEPS, seed=1, verbose=False)
    recorded_rates = spikes[:, :TRAIN].float().mean(1)
    simulated_rates = simulated.float().mean(1)
    assert torch.isfinite(simulated_rates).all()
    assert float(simulated_rates.mean()) == pytest.approx(float(recorded_rates.mean()), rel=0.1)
    assert ((simulated_rates / recorded_rates - 1).abs() < 0.25).all()
    output = tmp_path / "resimulated.npy"
    main(
        [
            "simulate",
            "--model",
            "spikefit.models.FilterGLM",
            "--model.dt",
            "0.5",
            "--model.window_ms",
            "15",
            "--model.n_basis",
            "4",
            "--model_state",
            str(run / "fitted_model.pt"),
            "--network",
            str(run / "fitted_network.pt"),
            "--n_steps",
            str(STEPS),
            "--seed",
            "1",
            "--output",
            str(output),
        ]
    )
    np.testing.assert_array_equal(np.load(output), simulated.numpy())  # the same spikes
    assert np.load(tmp_path / "W0.npy").shape == (8, 8, 4)  # weights per basis function


def test_the_check_compares_a_seeded_simulation_with_the_recording(fitted):
    task, spikes, _, run = fitted
    check = json.loads((run / "summary.json").read_text())["posterior_predictive"]
    assert check["stable"] and check["steps"] == TRAIN and check["seed"] == 0
    simulated = task.fitted_model().simulate(
        task.fitted_network(), TRAIN, seed=0, equilibration_steps=1_000, verbose=False
    )
    recorded, simulated = spikes[:, :TRAIN].numpy(), simulated.numpy().astype(float)
    recorded_hz, simulated_hz = recorded.mean(1) * 2000, simulated.mean(1) * 2000  # Δt = 0.5 ms
    np.testing.assert_allclose(check["recorded_rate_hz"], recorded_hz, rtol=1e-5)
    np.testing.assert_allclose(check["simulated_rate_hz"], simulated_hz, rtol=1e-5)
    correlation = np.corrcoef(recorded_hz, simulated_hz)[0, 1]
    assert check["rate_correlation"] == pytest.approx(correlation, abs=1e-5)
    ratio = np.median(simulated_hz / recorded_hz)
    assert check["rate_median_ratio"] == pytest.approx(ratio, rel=1e-5)
    assert correlation > 0.9 and 0.85 < ratio < 1.15
    for unit in range(8):  # KS distance of the ISIs by brute force (one spike per bin at most)
        a, b = np.diff(np.flatnonzero(recorded[unit])), np.diff(np.flatnonzero(simulated[unit]))
        grid = np.union1d(a, b)
        distance = np.abs((a[:, None] <= grid).mean(0) - (b[:, None] <= grid).mean(0)).max()
        assert check["isi_ks"][unit] == pytest.approx(distance, abs=1e-9)
    with open(run / "connections.csv") as file:
        rows = list(csv.DictReader(file))
    strongest = max(rows, key=lambda row: float(row["statistic"]))
    pre, post = check["ccg_pairs"][0]
    assert (pre, post) == (int(strongest["pre"]), int(strongest["post"]))
    ccgs = [  # Σ_t X_pre(t) X_post(t + ℓ) for ℓ = -30 … 30, the model's 30-step memory
        [
            raster[pre, max(0, -lag) : TRAIN - max(0, lag)]
            @ raster[post, max(0, lag) : TRAIN - max(0, -lag)]
            for lag in range(-30, 31)
        ]
        for raster in (recorded, simulated)
    ]
    assert check["ccg_correlation"][0] == pytest.approx(np.corrcoef(ccgs)[0, 1], abs=1e-4)
    task.check_prediction()  # same seed, same check
    assert task.summary()["posterior_predictive"] == check


def test_seed_kernels_give_one_function_per_filter_and_no_model_with_unfoldable_scales(
    tmp_path,
):
    data = network(6)
    data.W0 = data.W0[:, 0]  # one weight per pair
    spikes = BernoulliGLM(**TINY_GLM).simulate(data, 4_000, seed=1, verbose=False)
    task = LikelihoodFit(
        BernoulliGLM(**TINY_GLM), per_neuron=["theta"], refractory_scale=True, solver=Newton()
    )
    module = SpikeTrainDataModule(spikes=spikes, network=graph_to_dense(data))
    L.Trainer(max_epochs=3, default_root_dir=tmp_path, **QUIET).fit(task, module)
    arrays = np.load(tmp_path / "fitted_filters.npz")
    lag = np.arange(2)  # T = 2: c(τ) = e^{-α Δt τ}; ref(0) = -2, ref(1) = -1·e^0
    coupling = np.exp(-0.5 * lag)
    np.testing.assert_allclose(arrays["coupling_basis"], coupling[None], rtol=1e-6)
    np.testing.assert_allclose(arrays["self_basis"], [[-2.0, -1.0]])
    scale = task.refractory_scale.detach().numpy()
    np.testing.assert_allclose(arrays["self_weights"], scale[:, None], rtol=1e-6)
    np.testing.assert_allclose(arrays["self_filters"], np.outer(scale, [-2.0, -1.0]), rtol=1e-6)
    weights = task.coupling_weights.detach().numpy()
    assert arrays["coupling_weights"].shape == (30, 1)  # all pairs, coupling dense
    np.testing.assert_allclose(arrays["coupling_filters"], np.outer(weights, coupling), rtol=1e-5)
    assert "cannot be folded" in task.summary()["posterior_predictive"]["skipped"]
    assert not (tmp_path / "fitted_model.pt").exists()
    task.hparams.check_steps, task.results = 0, {}
    task.check_prediction()
    assert "posterior_predictive" not in task.summary()


class Excite(L.Callback):
    """Makes every fitted coupling weight strongly excitatory when the training ends, before
    the task's end-of-fit work."""

    def on_train_end(self, trainer: L.Trainer, pl_module: LikelihoodFit) -> None:
        pl_module.coupling_weights.data.fill_(5.0)


def test_a_fit_whose_network_runs_away_is_reported_and_still_written(tmp_path, capsys):
    task, _, _ = fit_filter_glm(tmp_path, "poisson", [Excite()], epochs=1, steps=5_000)
    check = json.loads((tmp_path / "summary.json").read_text())["posterior_predictive"]
    assert check["stable"] is False and "runaway activity" in check["reason"]
    assert "simulated_rate_hz" not in check  # the engine stopped the simulation
    assert "UNSTABLE, runaway activity" in capsys.readouterr().out
    for name in ("fitted_W0.npy", "fitted_filters.npz", "fitted_model.pt", "fitted_network.pt"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "coupling_filters.png").exists()
    assert not (tmp_path / "predictive_rates.png").exists()
    assert np.load(tmp_path / "fitted_filters.npz")["coupling_weights"].min() == 5.0
    assert task.predictive.figures() == {}


def test_rates_far_above_the_recording_mark_the_network_unstable():
    recorded = torch.zeros(4, 1000)
    recorded[:, ::20] = 1  # 5% of the bins
    assert predictive.runaway_reason(recorded, recorded.to(torch.uint8)) is None
    louder = torch.zeros(4, 1000, dtype=torch.uint8)
    louder[:, ::2] = 1  # 50% of the bins: 10× the recorded rate, not over it
    assert predictive.runaway_reason(recorded, louder) is None
    louder[:, 1::20] = 1  # 55%: 11×
    assert "11× the recorded" in predictive.runaway_reason(recorded, louder)
    busy = recorded.clone()
    busy[2, :600] = 1  # one neuron in 600 + 20 of the bins, the mean rate 3.85× the recorded
    assert predictive.runaway_reason(recorded, busy) == (
        "neurons spike in most bins: 1 of 4 (neuron 2 in 62% of the simulated bins, 5.0% of the "
        "recorded)"
    )


def test_intervals_distances_and_correlograms_by_hand():
    raster = torch.tensor([[1, 0, 2, 0, 1], [0, 1, 0, 1, 0]], dtype=torch.uint8)
    intervals = predictive.interspike_intervals(raster)  # unit 0 at bins 0, 2, 2, 4
    assert [list(unit) for unit in intervals] == [[2, 0, 2], [2]]
    assert predictive.ks_distance(np.array([1, 2, 3]), np.array([2, 3, 4])) == pytest.approx(1 / 3)
    assert np.isnan(predictive.ks_distance(np.array([]), np.array([1])))
    # C(ℓ) = Σ_t X_0(t) X_1(t+ℓ) / Σ_t X_0(t): ℓ = -1: (2·1 + 1·1)/4; ℓ = 0: 0; ℓ = 1: (1 + 2)/4
    ccg = predictive.cross_correlograms(raster, torch.tensor([[0], [1]]), 1)
    assert torch.allclose(ccg, torch.tensor([[0.75, 0.0, 0.75]]))
    assert torch.allclose(predictive.rates_hz(raster, 0.5), torch.tensor([1600.0, 800.0]))
