"""User models: what a model declares decides how it simulates, calibrates and fits. The
worked examples of docs/user_models.md run here as written, then every kind of user model
(its own link, its own input, its own emission draw, a new emission) is calibrated and
checked on fresh simulation, and fitted back or refused in one line."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from torch_geometric.loader import DataLoader

from spikefit.checks import InputError
from spikefit.data import NetworkDataModule, SpikeTrainDataModule
from spikefit.datasets import NormalGenerator, graph_to_dense
from spikefit.models import BernoulliGLM, PoissonGLM
from spikefit.models.emissions import Bernoulli
from spikefit.tasks import LikelihoodFit, RateCalibration
from spikefit.tasks.defaults import SEED_INTRODUCTION
from spikefit.tasks.solvers import LBFGS, Newton
from tests import QUIET

DOC = Path(__file__).parent.parent / "docs" / "user_models.md"


@pytest.fixture(scope="module")
def doc(tmp_path_factory) -> dict:
    """The namespace of the document's Python blocks, run in order in a fresh folder (where
    their runs write their results), their output kept."""
    namespace: dict = {}
    output, here = io.StringIO(), os.getcwd()
    os.chdir(tmp_path_factory.mktemp("doc"))
    try:
        with contextlib.redirect_stdout(output):
            for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S):
                exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102
    finally:
        os.chdir(here)
    namespace["output"] = output.getvalue()
    return namespace


def test_the_worked_examples_run_and_recover_their_models(doc):
    assert doc["model"].declares_kernels and doc["model"].effective_emission is not None
    achieved = doc["calibration"].achieved["global"]
    assert achieved == pytest.approx(8.0, rel=0.03)
    assert doc["fit"].model.theta.mean().item() == pytest.approx(5.0, abs=0.3)  # MergedGLM
    assert doc["counts"].max() > 1  # several spikes per bin: the Binomial draws
    assert "fitted thresholds" in doc["output"]


class SteeperLink(BernoulliGLM):
    """Its own link, p = σ(2(g - θ))·Δt (the Bernoulli emission stays)."""

    def non_linearity(self, input):
        return torch.sigmoid(2 * (input - self.theta)) * self.dt


class AtMostOne(PoissonGLM):
    """Its own draw: Poisson counts clipped to one spike per step."""

    def emit_spikes(self, rates):
        return torch.poisson(rates, generator=self._rng).clamp(max=1)


POISSON = dict(alpha=20.0, beta=1.0, T=10, tau=3.0, dt=1.0, r=1.0, b=-1.0)


def networks(n_networks: int = 2, n_neurons: int = 30):
    return NormalGenerator(n_neurons, mean=0, std=3, glorot=True, seed=3).generate(n_networks)


def calibrate_and_check(
    model, tune: str, target_hz: float, tmp_path: Path, tolerance: float = 0.03
) -> None:
    """Calibrates ``model`` (to ``tolerance``; few trials per step, since a model with its
    own input is teacher-forced one step at a time) and checks the reported rate, and the
    rate of a fresh simulation of the calibrated model (another seed, 40,000 steps), against
    the target."""
    task = RateCalibration(
        model,
        tune=[tune],
        target_rate_hz=target_hz,
        window_steps=200,
        max_trials=32,
        tolerance=tolerance,
    )
    data = NetworkDataModule(n_networks=2, batch_size=2)
    data.networks = networks()
    L.Trainer(max_epochs=20, default_root_dir=tmp_path, **QUIET).fit(task, data)
    assert task.converged
    reported = task.achieved["global"]
    assert reported == pytest.approx(target_hz, rel=tolerance)
    batch = next(iter(DataLoader(networks(), batch_size=2)))
    fresh = model.simulate(batch, 40_000, seed=123, verbose=False).float().mean().item() * 1000
    assert fresh == pytest.approx(reported, rel=tolerance + 0.02)  # + its sampling noise


@pytest.mark.parametrize("kind", ["link", "input", "emission draw", "new emission"])
def test_every_kind_of_user_model_calibrates_to_what_fresh_simulation_shows(kind, doc, tmp_path):
    model = {
        "link": lambda: SteeperLink(**SEED_INTRODUCTION),
        "input": lambda: doc["ExtraDrive"](**{**SEED_INTRODUCTION, "theta": 7.0}),
        "emission draw": lambda: AtMostOne(**POISSON),
        "new emission": lambda: doc["MergedGLM"](**SEED_INTRODUCTION),
    }[kind]()
    tune = "b" if kind == "emission draw" else "theta"
    calibrate_and_check(model, tune, 8.0, tmp_path)


def recording(model, steps: int = 20_000):
    network = networks(1)[0]
    return model.simulate(network, steps, seed=7, verbose=False)


def fitted_thresholds(model, spikes, tmp_path: Path, **options) -> torch.Tensor:
    task = LikelihoodFit(model, per_neuron=["theta"], **options)
    L.Trainer(max_epochs=25, default_root_dir=tmp_path, **QUIET).fit(
        task, SpikeTrainDataModule(spikes=spikes, network=None, heldout_fraction=0.2)
    )
    return task.model.theta.detach()


def test_its_own_link_is_fitted_with_that_link(tmp_path):
    spikes = recording(SteeperLink(**{**SEED_INTRODUCTION, "theta": 2.0}))
    assert spikes.float().mean() > 0.005  # a few Hz: the thresholds are identifiable
    start = {**SEED_INTRODUCTION, "theta": 3.0}
    theta = fitted_thresholds(
        SteeperLink(**start), spikes, tmp_path, coupling="dense", solver=Newton()
    )
    assert theta.mean().item() == pytest.approx(2.0, abs=0.2)


def test_its_own_input_is_fitted_through_it_and_its_coupling_is_refused(doc, tmp_path):
    extra = doc["ExtraDrive"]
    true = {**SEED_INTRODUCTION, "theta": 7.0}
    network = networks(1)[0]
    spikes = extra(**true).simulate(network, 3_000, seed=7, verbose=False)
    task = LikelihoodFit(
        extra(**{**true, "theta": 5.0}), per_neuron=["theta"], coupling="fixed", solver=Newton()
    )
    L.Trainer(max_epochs=15, default_root_dir=tmp_path, **QUIET).fit(
        task,
        SpikeTrainDataModule(spikes=spikes, network=graph_to_dense(network), heldout_fraction=0),
    )
    assert task.converged and task.model.theta.mean().item() == pytest.approx(7.0, abs=0.4)
    with pytest.raises(
        InputError,
        match=r"^LikelihoodFit\.coupling: ExtraDrive overrides its "
        r"input stage",
    ):
        LikelihoodFit(extra(**true), per_neuron=["theta"], coupling="dense")


def test_its_own_draw_has_no_likelihood_unless_given_one(tmp_path):
    with pytest.raises(
        InputError,
        match=r"^LikelihoodFit\.model: AtMostOne overrides "
        r"emit_spikes without declaring an emission",
    ):
        LikelihoodFit(AtMostOne(**POISSON), per_neuron=["b"])
    task = LikelihoodFit(
        AtMostOne(**POISSON), per_neuron=["b"], coupling="none", observation=Bernoulli()
    )
    assert task.observation.inverse_link is None  # the model's own non-linearity


def test_a_new_emission_is_fitted_with_its_likelihood(doc, tmp_path):
    merged = doc["MergedGLM"]
    spikes = recording(merged(**SEED_INTRODUCTION))
    theta = fitted_thresholds(
        merged(**{**SEED_INTRODUCTION, "theta": 4.0}),
        spikes,
        tmp_path,
        coupling="dense",
        solver=LBFGS(),
    )
    assert theta.mean().item() == pytest.approx(5.0, abs=0.3)
