"""The compiled simulation loops: the same spikes as the Python loops for every built-in model,
emission, basis and thread count, and a clean fallback."""

import math

import pytest
import torch
from torch_geometric.loader import DataLoader

from spikefit.datasets import NormalGenerator
from spikefit.models import (
    BernoulliGLM,
    PoissonGLM,
    RectifiedLNP,
    RectifiedSAM,
    ThresholdSAM,
    native,
)
from spikefit.models.bernoulli_glm import SEED_INTRODUCTION as SEED_GLM
from spikefit.models.emissions import Bernoulli, Poisson
from spikefit.models.engine import loops, steppers
from spikefit.models.engine.history import InputHistory
from spikefit.models.links import Exponential, Logistic
from spikefit.stimulus import RegularStimulus
from tests.test_models import PAPER, TwoBasisBernoulli, two_basis_network

needs_compiled_loop = pytest.mark.skipif(
    native.compiled_loops() is None, reason="the compiled loops cannot be built here"
)


def networks(n_networks: int, n_neurons: int):
    graphs = NormalGenerator(n_neurons, mean=0, std=5, glorot=True, seed=1).generate(n_networks)
    return next(iter(DataLoader(graphs, batch_size=n_networks)))


def simulate(model, data, python_loop: bool, monkeypatch, **kwargs) -> torch.Tensor:
    with monkeypatch.context() as patch:
        if python_loop:
            patch.setattr(steppers, "compiled_loops", lambda: None)
        return model.simulate(data, verbose=False, **kwargs)


def both_loops(model, data, monkeypatch, **kwargs) -> list[torch.Tensor]:
    """The spikes of the compiled and the Python loop, whose states after every block (the
    hazard left, the last input or the activation) are checked to be the same floats."""
    states, check = [], loops.check_activity

    def recording(model, spikes, latest, start):
        states.append(latest.clone().view(-1))
        check(model, spikes, latest, start)

    monkeypatch.setattr(loops, "check_activity", recording)
    runs = [simulate(model, data, python, monkeypatch, **kwargs) for python in (False, True)]
    half = len(states) // 2
    assert all(map(torch.equal, states[:half], states[half:]))
    return runs


class PoissonBernoulli(BernoulliGLM):
    """A declared Bernoulli emission with the exponential link: p = Δt/α e^{βg} (clamped)."""

    emission = Bernoulli(Exponential())


class LogisticPoisson(PoissonGLM):
    """A declared Poisson emission with the logistic link: μ = σ(g - θ)Δt."""

    emission = Poisson(Logistic())

    def __init__(self, **parameters) -> None:
        super().__init__(**parameters)
        self._register("theta", 1.0)


def paper(model_class, **changes):
    """The paper's parameters, with a shorter window and more activity for a short run."""
    parameters = {**PAPER[model_class], **changes}
    if "T" in parameters:
        parameters.update(T=20, r=0.002)
    return model_class(**parameters)


BUILT_IN = {
    "PoissonGLM": lambda: paper(PoissonGLM, b=0.2),
    "RectifiedLNP": lambda: paper(RectifiedLNP, b=0.02),
    "RectifiedSAM": lambda: paper(RectifiedSAM, b=0.02),
    "ThresholdSAM": lambda: paper(ThresholdSAM),
    "BernoulliGLM dt 0.5": lambda: BernoulliGLM(**{**SEED_GLM, "dt": 0.5}),
    "Bernoulli, exponential link": lambda: PoissonBernoulli(**{**SEED_GLM, "beta": 0.1}),
    "Poisson, logistic link": lambda: LogisticPoisson(**{**PAPER[PoissonGLM], "T": 20}),
}


@needs_compiled_loop
@pytest.mark.parametrize("name", list(BUILT_IN))
@pytest.mark.parametrize("n_trials", [1, 3])
def test_every_emission_gives_the_same_spikes_on_both_loops(name, n_trials, monkeypatch):
    model, data = BUILT_IN[name](), networks(3, 40)
    field = "theta" if hasattr(model, "theta") else "alpha"  # a link parameter per neuron
    getattr(model, field).data = getattr(model, field) * torch.linspace(0.9, 1.1, 120)
    assert steppers.loop_emission(model, 120, rescaled=True) is not None  # compiled
    runs = both_loops(model, data, monkeypatch, n_steps=600, seed=2, n_trials=n_trials)
    assert runs[0].sum() > 50
    assert torch.equal(runs[0], runs[1])


@needs_compiled_loop
@pytest.mark.parametrize(("dt", "n_trials"), [(1.0, 1), (1.0, 3), (0.5, 3)])
def test_bernoulli_glm_gives_the_same_spikes_on_both_loops(dt, n_trials, monkeypatch):
    data = networks(3, 40)
    model = BernoulliGLM(**{**SEED_GLM, "dt": dt})
    model.theta.data = torch.linspace(3.0, 5.0, 120)  # per-neuron threshold
    model.r.data = torch.linspace(0.5, 1.5, 120)  # per-neuron recurrence
    model.add_stimulus(
        RegularStimulus(
            strength=4.0, period=9, tau=2, stop=400, stimulus_masks=torch.arange(120) % 4 == 0
        )
    )
    runs = both_loops(model, data, monkeypatch, n_steps=400, seed=2, n_trials=n_trials)
    assert runs[0].sum() > 100
    assert torch.equal(runs[0], runs[1])


@needs_compiled_loop
def test_a_basis_of_coupling_kernels_gives_the_same_spikes_on_both_loops(monkeypatch):
    runs = both_loops(
        TwoBasisBernoulli(**SEED_GLM), two_basis_network(), monkeypatch, n_steps=2000, seed=1
    )
    assert 0 < runs[0].float().mean() < 0.1
    assert torch.equal(runs[0], runs[1])


@needs_compiled_loop
@pytest.mark.parametrize("basis", [False, True])
def test_sparse_and_dense_deliveries_give_the_same_spikes_on_both_loops(basis, monkeypatch):
    """A sparse network whose steps reach few neurons, but for a volley every 50 steps that
    reaches most: both ways the compiled loop delivers spikes."""
    generator = NormalGenerator(2000, mean=0, std=5, sparsity=0.995, glorot=True, seed=3)
    data = generator.generate(1)[0]
    model = BernoulliGLM(**SEED_GLM)
    if basis:
        model, data.W0 = (
            TwoBasisBernoulli(**SEED_GLM),
            data.W0.unsqueeze(1) * torch.tensor([1.0, -0.5]),
        )
    model.add_stimulus(
        RegularStimulus(
            strength=8.0,
            period=50,
            tau=1,
            stop=600,
            stimulus_masks=torch.ones(2000, dtype=torch.bool),
        )
    )
    runs = both_loops(model, data, monkeypatch, n_steps=600, seed=4)
    per_step = runs[0].sum(0)
    assert per_step.max() > 2000 // 8 and per_step.median() < 2000 // 40  # both kinds of step
    assert torch.equal(runs[0], runs[1])


@needs_compiled_loop
@pytest.mark.parametrize(
    ("model", "n_trials"),
    [
        (BernoulliGLM(**SEED_GLM), 1),
        (BernoulliGLM(**SEED_GLM), 3),
        (BernoulliGLM(**{**SEED_GLM, "dt": 0.5}), 20),  # rows that ATen splits over threads
        (paper(PoissonGLM, b=0.2), 2),
    ],
)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_spikes_do_not_depend_on_the_thread_count(model, n_trials, threads, monkeypatch):
    """Trials of 1,970 neurons (not a multiple of the vector width) cut into parts by
    threads, trials shared by parts, pools refilled, rows of 39,400 that ATen evaluates in
    chunks on threads of its own: the Python loop's spikes."""
    data = networks(1, 1970)
    monkeypatch.setattr(steppers, "ROW_PER_THREAD", 1)
    monkeypatch.setattr(steppers, "ROW_DRAW_PER_THREAD", 1)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        runs = both_loops(model, data, monkeypatch, n_steps=300, seed=4, n_trials=n_trials)
    finally:
        torch.set_num_threads(previous)
    assert runs[0].sum() > 1000
    assert torch.equal(runs[0], runs[1])


def test_threads_only_where_they_pay(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert steppers.loop_threads(7999, steppers.RESCALED) == 1
    assert steppers.loop_threads(8000, steppers.RESCALED_COUNTS) == 2
    assert steppers.loop_threads(10**6, steppers.THRESHOLD) == 2
    assert steppers.loop_threads(10_000, steppers.POISSON) == 1  # one thread draws the row
    assert steppers.loop_threads(100_000, steppers.POISSON) == 2


@needs_compiled_loop
def test_activation_models_on_threads_give_the_same_spikes(monkeypatch):
    data = networks(2, 700)
    monkeypatch.setattr(steppers, "ROW_PER_THREAD", 1)
    monkeypatch.setattr(steppers, "ROW_DRAW_PER_THREAD", 1)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for model in (paper(ThresholdSAM), paper(RectifiedSAM, b=0.02)):
            runs = both_loops(model, data, monkeypatch, n_steps=300, seed=3, n_trials=2)
            assert runs[0].sum() > 100
            assert torch.equal(runs[0], runs[1])
    finally:
        torch.set_num_threads(previous)


def test_what_the_model_declares_chooses_the_stepper():
    """Declared emissions the loops know are compiled (a user's model too); a subclass that
    overrides its link keeps the Bernoulli emission with its own link on the Python loop."""

    class Steeper(BernoulliGLM):
        def non_linearity(self, input):
            return torch.sigmoid(2 * (input - self.theta)) * self.dt

    data, generator = networks(1, 20), torch.Generator().manual_seed(0)
    compiled = native.compiled_loops() is not None
    for model, stepper in (
        (BernoulliGLM(**SEED_GLM), steppers.CompiledStepper if compiled else None),
        (PoissonBernoulli(**SEED_GLM), steppers.CompiledStepper if compiled else None),
        (Steeper(**SEED_GLM), steppers.RescaledStepper),
    ):
        history = InputHistory(model, data, 1, 10)
        chosen = steppers.choose_stepper(model, history, generator)
        assert stepper is None or type(chosen) is stepper
    assert steppers.loop_emission(Steeper(**SEED_GLM), 20, rescaled=True) is None
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
    native.compiled_loops.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="could not be built"):
            assert native.compiled_loops() is None
        spikes = BernoulliGLM(**SEED_GLM).simulate(networks(2, 20), 300, seed=0, verbose=False)
        assert spikes.shape == (40, 300) and spikes.sum() > 0
    finally:
        native.compiled_loops.cache_clear()


@pytest.mark.parametrize("threads", [1, 2])
def test_time_rescaled_counts_are_poisson(threads, monkeypatch):
    """Uncoupled PoissonGLM neurons at μ = Δt/α e^{βb} = 3 spikes per step: the compiled and the
    Python loop give the same counts (several rounds of draws in most steps, parts sharing
    trials), and they are Poisson(3): mean and variance 3, P(0) = e^{-3}, P(1) = 3 e^{-3}."""
    data = networks(1, 600)
    model = PoissonGLM(alpha=1.0, beta=1.0, T=5, tau=1.0, dt=1.0, r=0.0, b=math.log(3.0))
    assert steppers.loop_emission(model, 1200, rescaled=True).draw == steppers.RESCALED_COUNTS
    monkeypatch.setattr(steppers, "ROW_PER_THREAD", 1)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        runs = both_loops(model, data, monkeypatch, n_steps=400, seed=5, n_trials=2)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(runs[0], runs[1])
    counts = runs[0].float().flatten()
    n = counts.numel()  # 480,000 independent Poisson(3) counts
    assert abs(counts.mean() - 3) < 4 * math.sqrt(3 / n)
    assert abs(counts.var() - 3) < 4 * math.sqrt(2 * 9 / n + 3 / n)
    for k, probability in ((0, math.exp(-3)), (1, 3 * math.exp(-3))):
        share = (counts == k).float().mean()
        assert abs(share - probability) < 4 * math.sqrt(probability / n)


@pytest.mark.parametrize("dt", [1.0, 0.5])
def test_time_rescaled_bernoulli_spikes_are_bernoulli(dt, monkeypatch):
    """Uncoupled BernoulliGLM neurons without refractoriness at g - θ from -14 to 90
    (p = σ(g - θ)Δt from 8·10⁻⁷ to Δt): the compiled and the Python loop give the same spikes,
    each neuron fires in a share p of the steps, and two steps in a row in a share p²."""
    exponents = torch.tensor([-14.0, -9.0, -4.0, 0.0, 3.0, 8.0, 20.0, 90.0])
    group = 50
    model = BernoulliGLM(**{**SEED_GLM, "r": 0.0, "abs_ref_strength": 0.0, "dt": dt})
    model.rel_ref_strength.data.zero_()
    model.theta.data = (-exponents).repeat_interleave(group)
    runs = both_loops(
        model, networks(1, len(exponents) * group), monkeypatch, n_steps=4000, seed=3, n_trials=2
    )
    assert torch.equal(runs[0], runs[1])
    spikes = runs[0].float().movedim(2, 1).reshape(len(exponents), -1, 4000)  # [x, N·K, T]
    for x, groups in zip(exponents.tolist(), spikes, strict=True):
        p = dt / (1 + math.exp(-x))
        n = groups.numel()
        share = groups.mean().item()
        assert abs(share - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1 / n, (x, share, p)
        pairs = (groups[:, 1:] * groups[:, :-1]).mean().item()
        assert abs(pairs - p * p) <= 4 * math.sqrt(p * p * (1 - p * p) / n) + 1 / n, (x, pairs)
