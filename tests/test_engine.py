"""The compiled simulation loop: same spikes as the Python loop, and a clean fallback."""

import pytest
import torch
from torch_geometric.loader import DataLoader

from spikefit.datasets import NormalGenerator
from spikefit.models import BernoulliGLM, native
from spikefit.models.bernoulli_glm import SEED_INTRODUCTION as SEED_GLM
from spikefit.models.engine import steppers
from spikefit.models.engine.history import InputHistory
from spikefit.stimulus import RegularStimulus

needs_compiled_loop = pytest.mark.skipif(
    native.logistic_kernel() is None, reason="the compiled loop cannot be built here"
)


def networks(n_networks: int, n_neurons: int):
    graphs = NormalGenerator(n_neurons, mean=0, std=5, glorot=True, seed=1).generate(n_networks)
    return next(iter(DataLoader(graphs, batch_size=n_networks)))


def simulate(model, data, python_loop: bool, monkeypatch, **kwargs) -> torch.Tensor:
    with monkeypatch.context() as patch:
        if python_loop:
            patch.setattr(steppers, "logistic_kernel", lambda: None)
        return model.simulate(data, verbose=False, **kwargs)


@needs_compiled_loop
@pytest.mark.parametrize(("dt", "n_trials"), [(1.0, 1), (1.0, 3), (0.5, 3)])
def test_compiled_and_python_loops_give_the_same_spikes(dt, n_trials, monkeypatch):
    data = networks(3, 40)
    model = BernoulliGLM(**{**SEED_GLM, "dt": dt})
    model.theta.data = torch.linspace(3.0, 5.0, 120)  # per-neuron threshold
    model.add_stimulus(
        RegularStimulus(
            strength=4.0, period=9, tau=2, stop=400, stimulus_masks=torch.arange(120) % 4 == 0
        )
    )
    runs = [
        simulate(model, data, python_loop, monkeypatch, n_steps=400, seed=2, n_trials=n_trials)
        for python_loop in (False, True)
    ]
    assert runs[0].sum() > 100
    assert torch.equal(runs[0], runs[1])


@needs_compiled_loop
def test_compiled_loop_spikes_do_not_depend_on_the_thread_count():
    data = networks(20, 100)  # 20 trials x 2000 neurons: the steps are split over threads
    model = BernoulliGLM(**SEED_GLM)
    runs = []
    for threads in (1, 2):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            runs.append(model.simulate(data, 200, seed=4, n_trials=20, verbose=False))
        finally:
            torch.set_num_threads(previous)
    assert torch.equal(runs[0], runs[1])


def test_subclass_with_its_own_link_runs_its_link():
    """A subclass that overrides non_linearity alone keeps the Bernoulli emission, with its
    own link: time rescaling with -log(1 - p) of its p, never the compiled logistic loop."""

    class Steeper(BernoulliGLM):
        def non_linearity(self, input):
            return torch.sigmoid(2 * (input - self.theta)) * self.dt

    data, generator = networks(1, 20), torch.Generator().manual_seed(0)
    for model, stepper in (
        (BernoulliGLM(**SEED_GLM), steppers.CompiledStepper),
        (Steeper(**SEED_GLM), steppers.RescaledStepper),
    ):
        history = InputHistory(model, data, 1, 10)
        chosen = steppers.choose_stepper(model, history, generator)
        if native.logistic_kernel() is not None or stepper is steppers.RescaledStepper:
            assert type(chosen) is stepper
    steeper = Steeper(**SEED_GLM)
    g = torch.linspace(-2.0, 8.0, 11)
    assert torch.allclose(
        steeper.effective_emission.hazard(steeper, g), -torch.log1p(-steeper.non_linearity(g))
    )


def test_fallback_when_the_loop_cannot_be_built(monkeypatch):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr("torch.utils.cpp_extension.load_inline", no_compiler)
    monkeypatch.setattr(native, "import_built", lambda name, folder: None)  # no build yet
    native.logistic_kernel.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="could not be built"):
            assert native.logistic_kernel() is None
        spikes = BernoulliGLM(**SEED_GLM).simulate(networks(2, 20), 300, seed=0, verbose=False)
        assert spikes.shape == (40, 300) and spikes.sum() > 0
    finally:
        native.logistic_kernel.cache_clear()
