"""Model core: kernels, the three stages, emission statistics and the simulation engines."""

import math

import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from spikefit.checks import InputError
from spikefit.datasets import NormalGenerator, dense_to_graph
from spikefit.models import (
    BernoulliGLM,
    PoissonGLM,
    RectifiedLNP,
    RectifiedSAM,
    RunawayActivityError,
    ThresholdSAM,
)
from spikefit.models.bernoulli_glm import SEED_INTRODUCTION as SEED_GLM
from spikefit.stimulus import RegularStimulus

PAPER = {
    PoissonGLM: dict(alpha=15.9, beta=10, dt=0.1, T=200, tau=10, r=0.025, b=0.001),
    RectifiedLNP: dict(lambda_0=9.8, theta=-0.002, dt=0.1, T=200, tau=10, r=0.025, b=0.001),
    RectifiedSAM: dict(lambda_0=1.0861, theta=-0.0137, tau=10, dt=0.1, r=0.025, b=0.001),
    ThresholdSAM: dict(r=0.025, b=0.001, tau=10, dt=0.1, sigma=0.3, rho=0.07, theta=0.001378),
}


def tiny_graph() -> Data:
    """0 → 1 (weight 2), 2 → 1 (weight -1), 1 → 0 (weight 0.5)."""
    return Data(
        edge_index=torch.tensor([[0, 2, 1], [1, 1, 0]]),
        W0=torch.tensor([2.0, -1.0, 0.5]),
        num_nodes=3,
    )


def batch_of_networks(n_networks: int = 4, n_neurons: int = 20, seed: int = 0) -> Data:
    networks = NormalGenerator(n_neurons, mean=0, std=5, glorot=True, seed=seed).generate(
        n_networks
    )
    return next(iter(DataLoader(networks, batch_size=n_networks)))


# ---------------------------------------------------------------- kernels and filters
def test_bernoulli_refractory_kernel_matches_seed_values():
    ref = BernoulliGLM(**SEED_GLM).self_kernel()
    expected = [-100, -100, -100, -30, -18.196, -11.036, -6.694, -4.060, -2.463, -1.494]
    assert ref.tolist() == pytest.approx(expected, abs=1e-3)


def test_bernoulli_connectivity_filter_is_flipped_with_self_edges_appended():
    model = BernoulliGLM(**SEED_GLM)
    graph = tiny_graph()
    W, edge_index = model.connectivity_filter(graph.W0, graph.edge_index, 3)
    assert W.shape == (3 + 3, 10)
    assert torch.equal(edge_index[:, :3], graph.edge_index)  # W0 stays aligned with its edges
    assert torch.equal(edge_index[:, 3:], torch.tensor([[0, 1, 2], [0, 1, 2]]))
    coupling = [math.exp(-0.2 * lag) if lag < 5 else 0.0 for lag in range(10)]
    assert W[0].tolist() == pytest.approx([2 * c for c in reversed(coupling)], rel=1e-6)
    assert W[3, -1].item() == -100 and W[3, 0].item() == pytest.approx(-30 * math.exp(-3))


@pytest.mark.parametrize("model_class", [PoissonGLM, RectifiedLNP])
def test_poisson_kernels_decay_with_tau(model_class):
    model = model_class(**{**PAPER[model_class], "T": 4})
    graph = tiny_graph()
    W, edge_index = model.connectivity_filter(graph.W0, graph.edge_index, 3)
    assert torch.equal(edge_index, graph.edge_index)  # no self-edges
    assert W[0].tolist() == pytest.approx([2 * math.exp(-lag * 0.1 / 10) for lag in (3, 2, 1, 0)])


def test_connectivity_filter_rejects_self_loops_and_nan():
    model = BernoulliGLM(**SEED_GLM)
    with pytest.raises(ValueError, match="self-loops"):
        model.connectivity_filter(torch.ones(2), torch.tensor([[0, 1], [1, 1]]))
    with pytest.raises(ValueError, match="NaN"):
        model.connectivity_filter(torch.tensor([1.0, math.nan]), torch.tensor([[0, 1], [1, 0]]))
    with pytest.raises(ValueError, match=r"W0: shape \[3\] does not match 2 edges"):
        model.connectivity_filter(torch.ones(3), torch.tensor([[0, 1], [1, 0]]))


# ---------------------------------------------------------------- the three stages by hand
def test_bernoulli_input_by_hand():
    model = BernoulliGLM(**{**SEED_GLM, "r": 0.5})
    graph = tiny_graph()
    W, edge_index = model.connectivity_filter(graph.W0, graph.edge_index, 3)
    state = torch.zeros(3, 10)
    state[0, 9] = 1  # neuron 0 fired at lag 0
    state[2, 7] = 1  # neuron 2 fired at lag 2
    state[1, 5] = 1  # neuron 1 itself fired at lag 4
    g = model.input(edge_index, W, state)
    c = lambda lag: math.exp(-0.2 * lag)  # noqa: E731
    expected_0 = -100 + 0.5 * 0.5 * c(4)  # own spike at lag 0; neuron 1's spike at lag 4
    expected_1 = 0.5 * (2 * c(0) - 1 * c(2)) + (-30 * math.exp(-0.5))  # r scales coupling only
    expected_2 = -100  # own spike at lag 2, no input edges
    assert g.tolist() == pytest.approx([expected_0, expected_1, expected_2], rel=1e-6)
    p = model.non_linearity(g)
    assert p[1].item() == pytest.approx(1 / (1 + math.exp(-(expected_1 - 5))), rel=1e-6)


def test_per_neuron_r_scales_each_neurons_incoming_coupling():
    model = BernoulliGLM(**SEED_GLM)
    model.r.data = torch.tensor([0.5, 2.0, 3.0])
    graph = tiny_graph()
    W, edge_index = model.connectivity_filter(graph.W0, graph.edge_index, 3)
    state = torch.zeros(3, 10)
    state[0, 9] = state[2, 7] = state[1, 5] = 1  # lags 0, 2 and 4, as above
    g = model.input(edge_index, W, state)
    c = lambda lag: math.exp(-0.2 * lag)  # noqa: E731
    expected = [-100 + 0.5 * 0.5 * c(4), 2.0 * (2 * c(0) - 1 * c(2)) - 30 * math.exp(-0.5), -100]
    assert g.tolist() == pytest.approx(expected, rel=1e-6)


def test_poisson_glm_input_nonlinearity_by_hand():
    model = PoissonGLM(alpha=2.0, beta=0.5, T=3, tau=1.0, dt=0.5, r=2.0, b=0.1)
    graph = tiny_graph()
    W, edge_index = model.connectivity_filter(graph.W0, graph.edge_index, 3)
    state = torch.tensor([[0, 0, 2.0], [0, 0, 0], [1.0, 0, 0]])  # counts; lag 0 is column 2
    g = model.input(edge_index, W, state)
    expected_1 = 2.0 * (2 * 2 * 1.0 - 1 * math.exp(-2 * 0.5 / 1.0)) + 0.1
    assert g[1].item() == pytest.approx(expected_1, rel=1e-6)
    assert model.non_linearity(g)[1].item() == pytest.approx(0.5 / 2.0 * math.exp(0.5 * expected_1))


def test_rectified_models_by_hand():
    lnp = RectifiedLNP(lambda_0=2.0, theta=0.5, T=1, tau=1.0, dt=0.1, r=1.0, b=0.0)
    assert lnp.non_linearity(torch.tensor([0.2, 1.5])).tolist() == pytest.approx([0.0, 0.2])
    sam = RectifiedSAM(lambda_0=2.0, theta=0.5, tau=10.0, dt=0.1, r=3.0, b=0.25)
    graph = tiny_graph()
    W, edge_index = sam.connectivity_filter(graph.W0, graph.edge_index, 3)
    activation = torch.tensor([[1.0], [0.0], [2.0]])
    assert sam.input(edge_index, W, activation)[1].item() == pytest.approx(3 * (2 - 2) + 0.25)
    updated = sam.update_activation(torch.tensor([[1.0], [0.0], [0.0]]), activation)
    assert updated.squeeze(1).tolist() == pytest.approx([1 * 0.99 + 0.1, 0.0, 2 * 0.99])


# ---------------------------------------------------------------- emission statistics
def test_bernoulli_emission_mean_and_variance():
    model = BernoulliGLM(**{**SEED_GLM, "dt": 0.5}, rng=torch.Generator().manual_seed(1))
    p = torch.full((200_000,), 0.3)
    x = model.emit_spikes(p)
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert x.mean().item() == pytest.approx(0.3, abs=0.005)
    assert x.var().item() == pytest.approx(0.21, abs=0.005)


@pytest.mark.parametrize("model_class", [PoissonGLM, RectifiedLNP, RectifiedSAM])
def test_poisson_emission_counts(model_class):
    model = model_class(**PAPER[model_class], rng=torch.Generator().manual_seed(2))
    x = model.emit_spikes(torch.full((200_000,), 1.7))
    assert torch.equal(x, x.round())  # integer counts, not counts · dt
    assert x.mean().item() == pytest.approx(1.7, rel=0.01)
    assert x.var().item() == pytest.approx(1.7, rel=0.02)


def test_threshold_sam_noise_is_sparse_gaussian():
    model = ThresholdSAM(**{**PAPER[ThresholdSAM], "b": 2.0}, rng=torch.Generator().manual_seed(3))
    background = model.background_input((400_000,))
    noisy = background != 2.0
    assert noisy.float().mean().item() == pytest.approx(0.07, abs=0.002)
    xi = background[noisy] / 2.0 - 1  # b (1 + ξ) with ξ ~ N(0, σ²), not squared
    assert xi.mean().item() == pytest.approx(0.0, abs=0.01)
    assert xi.std().item() == pytest.approx(0.3, rel=0.02)
    assert model.emit_spikes(torch.tensor([0.001, 0.002])).tolist() == [0.0, 1.0]


# ---------------------------------------------------------------- fast engine vs reference
class Replay:
    """Mixed into a model: replays ``self.raster`` and records the inputs the engine
    computes in ``self.inputs``."""

    def replay(self, raster: torch.Tensor) -> None:
        self.raster, self.step, self.inputs = raster, 0, []

    def non_linearity(self, input):
        self.inputs.append(input.reshape(-1).clone())
        return input

    def emit_spikes(self, rates):
        spikes = self.raster[:, self.step].reshape(rates.shape).float()
        self.step += 1
        return spikes


class ForcedBernoulli(Replay, BernoulliGLM):
    """The seed BernoulliGLM (other r and relative refractoriness) replaying ``raster``."""

    def __init__(self, raster: torch.Tensor) -> None:
        super().__init__(**{**SEED_GLM, "r": 0.7, "rel_ref_strength": -20})
        self.replay(raster)


@pytest.mark.parametrize("per_neuron_r", [False, True])
def test_fast_engine_inputs_equal_reference_inputs(per_neuron_r):
    data = batch_of_networks()
    stimulus = RegularStimulus(
        strength=3.0, period=7, tau=2, stop=300, stimulus_masks=torch.arange(80) % 3 == 0
    )
    raster = (torch.rand(80, 300, generator=torch.Generator().manual_seed(4)) < 0.1).float()
    recorded = {}
    for engine in ("fast", "reference"):
        model = ForcedBernoulli(raster)
        if per_neuron_r:
            model.r.data = torch.linspace(0.2, 1.5, 80)
        model.add_stimulus(stimulus)
        model.simulate(data, 300, seed=5, equilibration_steps=0, verbose=False, engine=engine)
        recorded[engine] = torch.stack(model.inputs)
    assert torch.allclose(recorded["fast"], recorded["reference"], atol=1e-5)
    assert recorded["fast"].abs().max() > 10  # the comparison covers real inputs


def test_fast_engine_matches_spikeometric_inputs_to_float_precision():
    spikeometric = pytest.importorskip("spikeometric.models")
    data = batch_of_networks(n_networks=2, n_neurons=30)
    ours = BernoulliGLM(**SEED_GLM)
    theirs = spikeometric.BernoulliGLM(**SEED_GLM)
    W_ours, ei_ours = ours.connectivity_filter(data.W0, data.edge_index, data.num_nodes)
    W_theirs, ei_theirs = theirs.connectivity_filter(data.W0, data.edge_index)
    dense = lambda W, ei: torch.zeros(60, 60, 10).index_put_((ei[0], ei[1]), W)  # noqa: E731
    assert torch.allclose(dense(W_ours, ei_ours), dense(W_theirs, ei_theirs), atol=1e-6)
    state = (torch.rand(60, 10, generator=torch.Generator().manual_seed(6)) < 0.2).float()
    g_ours = ours.input(ei_ours, W_ours, state)
    g_theirs = theirs.input(ei_theirs, W_theirs, state.int())
    assert torch.allclose(g_ours, g_theirs, atol=1e-5)
    assert torch.allclose(ours.non_linearity(g_ours), theirs.non_linearity(g_theirs), atol=1e-6)


def test_fast_and_reference_firing_statistics_agree():
    data = batch_of_networks(n_networks=4, n_neurons=50)
    model = BernoulliGLM(**SEED_GLM)
    fast = model.simulate(data, 20000, seed=7, verbose=False).float()
    reference = model.simulate(data, 2000, seed=8, verbose=False, engine="reference").float()
    rate = fast.mean().item()
    standard_error = math.sqrt(rate * (1 - rate) / reference.numel()) * 3  # ×3: correlations
    assert abs(rate - reference.mean().item()) < 4 * standard_error
    assert 0.003 < rate < 0.02  # the seed example fires at a few Hz


@pytest.mark.parametrize("model_class", [RectifiedSAM, ThresholdSAM, PoissonGLM, RectifiedLNP])
def test_fast_and_reference_agree_for_every_model(model_class):
    data = batch_of_networks(n_networks=2, n_neurons=20)
    model = model_class(
        **{**PAPER[model_class], "T": 20, "r": 0.002}
        if "T" in PAPER[model_class]
        else PAPER[model_class]
    )
    model.b.data.fill_({PoissonGLM: 0.2, ThresholdSAM: 0.001}.get(model_class, 0.02))
    fast = model.simulate(data, 1500, seed=1, verbose=False).float().mean().item()
    reference = (
        model.simulate(data, 1500, seed=2, verbose=False, engine="reference").float().mean().item()
    )
    assert fast > 0
    assert fast == pytest.approx(reference, rel=0.15)


def test_same_seed_same_spikes_different_seed_different_spikes():
    data = batch_of_networks()
    model = BernoulliGLM(**SEED_GLM)
    a = model.simulate(data, 500, seed=11, verbose=False)
    b = model.simulate(data, 500, seed=11, verbose=False)
    c = model.simulate(data, 500, seed=12, verbose=False)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_trials_are_independent_and_shaped():
    data = batch_of_networks()
    spikes = BernoulliGLM(**SEED_GLM).simulate(data, 300, seed=1, n_trials=3, verbose=False)
    assert spikes.shape == (80, 300, 3) and spikes.dtype == torch.uint8
    assert not torch.equal(spikes[..., 0], spikes[..., 1])


def test_events_hold_the_same_spikes_as_the_raster():
    data = batch_of_networks()
    model = RectifiedLNP(**{**PAPER[RectifiedLNP], "T": 20, "b": 0.02, "r": 0.002})
    raster = model.simulate(data, 700, seed=3, n_trials=2, verbose=False)
    events = model.simulate(data, 700, seed=3, n_trials=2, verbose=False, as_events=True)
    assert torch.equal(events.to_raster(), raster)
    expected = raster.float().mean(dim=(1, 2)) / 0.1 * 1000
    assert torch.allclose(events.rates_hz(), expected)


def test_stimulus_column_k_receives_stimulus_at_k():
    graph = dense_to_graph(torch.zeros(4, 4).fill_diagonal_(0) + torch.eye(4).roll(1, 0) * 0.1)
    stimulus = RegularStimulus(
        strength=1000.0,
        period=10,
        tau=1,
        stop=60,
        start=5,
        stimulus_masks=torch.tensor([1, 0, 0, 0]),
    )
    model = BernoulliGLM(**SEED_GLM)
    model.add_stimulus(stimulus)
    spikes = model.simulate(graph, 60, seed=0, verbose=False)
    assert spikes[0, [5, 15, 25, 35, 45, 55]].tolist() == [1] * 6


# ---------------------------------------------------------------- bad input and persistence
def test_bad_input_errors():
    with pytest.raises(ValueError, match="dt"):
        BernoulliGLM(**{**SEED_GLM, "dt": 2})
    with pytest.raises(ValueError, match="theta"):
        BernoulliGLM(**{**SEED_GLM, "theta": math.nan})
    with pytest.raises(TypeError, match="callable"):
        BernoulliGLM(**SEED_GLM).add_stimulus(5.0)
    data = batch_of_networks(n_networks=2)
    stimulus = RegularStimulus(
        strength=1.0, period=10, tau=1, stop=10, stimulus_masks=torch.ones(30, dtype=torch.bool)
    )
    model = BernoulliGLM(**SEED_GLM)
    model.add_stimulus(stimulus)
    with pytest.raises(ValueError, match="covers 30 neurons but the network batch has 40"):
        model.simulate(data, 10, verbose=False)
    looped = Data(edge_index=torch.tensor([[0, 1], [0, 0]]), W0=torch.ones(2), num_nodes=2)
    with pytest.raises(ValueError, match="self-loops"):
        BernoulliGLM(**SEED_GLM).simulate(looped, 10, verbose=False)


ARGUMENTS = {BernoulliGLM: SEED_GLM, **PAPER}
NAN, INF = math.nan, math.inf
BAD_PARAMETERS = [  # (class, argument, value): one bad value per rule and class at least
    (BernoulliGLM, "dt", 0),
    (BernoulliGLM, "dt", 1.5),
    (BernoulliGLM, "dt", NAN),
    (BernoulliGLM, "coupling_window", 2.5),
    (BernoulliGLM, "coupling_window", -1),
    (BernoulliGLM, "abs_ref_scale", -1),
    (BernoulliGLM, "rel_ref_scale", "7"),
    (BernoulliGLM, "theta", NAN),
    (BernoulliGLM, "theta", torch.tensor([1.0, INF])),
    (BernoulliGLM, "alpha", INF),
    (BernoulliGLM, "beta", NAN),
    (BernoulliGLM, "r", INF),
    (BernoulliGLM, "abs_ref_strength", NAN),
    (BernoulliGLM, "rel_ref_strength", -INF),
    (PoissonGLM, "alpha", 0),
    (PoissonGLM, "alpha", -15.9),
    (PoissonGLM, "alpha", torch.tensor([1.0, -1.0])),
    (PoissonGLM, "beta", NAN),
    (PoissonGLM, "T", 0),
    (PoissonGLM, "T", 1.5),
    (PoissonGLM, "tau", 0),
    (PoissonGLM, "tau", -5),
    (PoissonGLM, "dt", 0),
    (PoissonGLM, "dt", -0.1),
    (PoissonGLM, "r", INF),
    (PoissonGLM, "b", NAN),
    (RectifiedLNP, "lambda_0", -1),
    (RectifiedLNP, "theta", NAN),
    (RectifiedLNP, "T", -3),
    (RectifiedLNP, "tau", 0),
    (RectifiedLNP, "dt", 0),
    (RectifiedLNP, "r", NAN),
    (RectifiedLNP, "b", INF),
    (RectifiedSAM, "lambda_0", -0.5),
    (RectifiedSAM, "theta", INF),
    (RectifiedSAM, "tau", 0.05),
    (RectifiedSAM, "tau", torch.tensor([10.0, 0.01])),
    (RectifiedSAM, "tau", -10),
    (RectifiedSAM, "dt", 0),
    (RectifiedSAM, "r", NAN),
    (RectifiedSAM, "b", NAN),
    (ThresholdSAM, "tau", 0.05),
    (ThresholdSAM, "dt", -0.1),
    (ThresholdSAM, "sigma", -0.3),
    (ThresholdSAM, "rho", 1.5),
    (ThresholdSAM, "rho", -0.1),
    (ThresholdSAM, "theta", NAN),
    (ThresholdSAM, "r", INF),
    (ThresholdSAM, "b", NAN),
]


@pytest.mark.parametrize(
    "model_class, name, value",
    BAD_PARAMETERS,
    ids=[f"{c.__name__}.{n}={v}" for c, n, v in BAD_PARAMETERS],
)
def test_bad_parameters_are_refused_at_construction_naming_them(model_class, name, value):
    with pytest.raises(InputError) as error:
        model_class(**{**ARGUMENTS[model_class], name: value})
    assert str(error.value).startswith(f"{model_class.__name__}.{name}: ")
    assert "(expected" in str(error.value)


def test_negative_gain_and_zero_tau_fail_at_construction_not_in_torch_poisson():
    with pytest.raises(InputError, match=r"^RectifiedLNP\.lambda_0: -1 is out of range"):
        RectifiedLNP(**{**PAPER[RectifiedLNP], "lambda_0": -1})
    with pytest.raises(InputError, match=r"^PoissonGLM\.tau: 0 is out of range"):
        PoissonGLM(**{**PAPER[PoissonGLM], "tau": 0})


@pytest.mark.parametrize("model_class", [RectifiedSAM, ThresholdSAM])
def test_activation_tau_must_reach_dt(model_class):
    model_class(**{**PAPER[model_class], "tau": 0.1})  # tau = dt: s forgets in one step
    with pytest.raises(InputError, match=r"\.tau: 0\.09 .*dt = 0\.1 ms"):
        model_class(**{**PAPER[model_class], "tau": 0.09})


def test_bernoulli_needs_a_history_window():
    with pytest.raises(InputError, match=r"^BernoulliGLM\.coupling_window: 0 .*\(expected"):
        BernoulliGLM(**{**SEED_GLM, "coupling_window": 0, "abs_ref_scale": 0, "rel_ref_scale": 0})
    assert BernoulliGLM(**{**SEED_GLM, "alpha": -0.2, "beta": -0.5}).window == 10  # |α|, |β|


def test_errors_name_the_subclass():
    class MyGLM(PoissonGLM):
        pass

    with pytest.raises(InputError, match=r"^MyGLM\.tau: "):
        MyGLM(**{**PAPER[PoissonGLM], "tau": -5})


def test_runaway_activity_stops_with_a_message():
    data = batch_of_networks(n_networks=1, n_neurons=20)
    data.W0 = data.W0.abs() * 50
    model = PoissonGLM(**{**PAPER[PoissonGLM], "T": 20, "r": 1.0})
    with pytest.raises(RunawayActivityError, match="exploded"):
        model.simulate(data, 2000, seed=0, verbose=False)


def test_save_load_round_trip_with_per_neuron_parameter(tmp_path):
    model = BernoulliGLM(**SEED_GLM)
    model.add_stimulus(
        RegularStimulus(strength=2.5, period=10, tau=1, stop=10, stimulus_masks=torch.ones(3))
    )
    model.theta.data = torch.tensor([4.0, 5.0, 6.0])
    model.save(tmp_path / "model.pt")
    other = BernoulliGLM(**{**SEED_GLM, "r": 3})
    other.add_stimulus(
        RegularStimulus(strength=0.0, period=10, tau=1, stop=10, stimulus_masks=torch.ones(3))
    )
    other.load(tmp_path / "model.pt")
    assert other.theta.tolist() == [4.0, 5.0, 6.0] and other.r.item() == 1.0
    assert other.stimulus.strength.item() == 2.5
    assert set(other.tunable_parameters) == {
        "theta",
        "r",
        "alpha",
        "beta",
        "rel_ref_strength",
        "stimulus.strength",
    }


# ---------------------------------------------------------------- declared models
class SteeperLink(BernoulliGLM):
    """Overrides the non-linearity alone: p = σ(2(g - θ))·Δt."""

    def non_linearity(self, input):
        return torch.sigmoid(2 * (input - self.theta)) * self.dt


class ExtraDrive(BernoulliGLM):
    """Overrides the input stage: a constant drive of 1.5 on top of the seed input."""

    def input(self, edge_index, W, state, t=-1):
        return super().input(edge_index, W, state, t) + 1.5


class AtMostOne(PoissonGLM):
    """Overrides the emission: Poisson counts clipped to one spike per step."""

    def emit_spikes(self, rates):
        return torch.poisson(rates, generator=self._rng).clamp(max=1)


def test_what_a_model_declares_decides_its_path():
    seed = BernoulliGLM(**SEED_GLM)
    assert seed.declares_kernels and seed.effective_emission is BernoulliGLM.emission
    steeper = SteeperLink(**SEED_GLM)
    assert steeper.declares_kernels
    assert steeper.effective_emission.inverse_link is None  # its own non-linearity
    assert not ExtraDrive(**SEED_GLM).declares_kernels
    assert AtMostOne(**PAPER[PoissonGLM]).effective_emission is None
    for model_class, parameters in PAPER.items():
        assert model_class(**parameters).declares_kernels


def test_an_overridden_link_is_simulated_with_that_link():
    """Fast engine (time rescaling with the subclass's p) and reference path (its forward)
    fire at the same rate, well above the seed model's (the steeper link)."""
    data = batch_of_networks(n_networks=2, n_neurons=50)
    steeper = SteeperLink(**{**SEED_GLM, "theta": 3})
    fast = steeper.simulate(data, 20000, seed=1, verbose=False).float().mean().item()
    reference = (
        steeper.simulate(data, 2000, seed=2, verbose=False, engine="reference")
        .float()
        .mean()
        .item()
    )
    seed = (
        BernoulliGLM(**{**SEED_GLM, "theta": 3})
        .simulate(data, 20000, seed=1, verbose=False)
        .float()
        .mean()
        .item()
    )
    assert fast == pytest.approx(reference, rel=0.1)
    assert abs(fast - seed) > 0.2 * seed


def test_an_overridden_input_runs_the_reference_path_and_teacher_forcing_calls_it():
    data = batch_of_networks(n_networks=2, n_neurons=10)
    model = ExtraDrive(**SEED_GLM)
    raster = (torch.rand(20, 200, generator=torch.Generator().manual_seed(2)) < 0.1).float()
    W, edge_index = model.connectivity_filter(data.W0, data.edge_index, 20)
    history = torch.nn.functional.pad(raster, (model.window, 0))
    by_hand = torch.stack(
        [model.input(edge_index, W, history[:, s : s + model.window], t=s) for s in range(200)], -1
    )
    forced = model.input_from_spikes(data, raster.unsqueeze(0))[0]
    assert torch.allclose(forced, by_hand) and (forced - 1.5).abs().max() > 1  # real inputs
    seed_forced = BernoulliGLM(**SEED_GLM).input_from_spikes(data, raster.unsqueeze(0))[0]
    assert torch.allclose(forced, seed_forced + 1.5, atol=1e-5)
    calls = []
    model.forward = lambda *args, **kwargs: calls.append(1) or torch.zeros(20)
    model.simulate(data, 10, seed=0, equilibration_steps=0, verbose=False)
    assert len(calls) == 10  # the per-step reference path


def test_an_overridden_emission_is_sampled_by_the_model():
    data = batch_of_networks(n_networks=2, n_neurons=20)
    model = AtMostOne(**{**PAPER[PoissonGLM], "T": 20, "b": 0.25, "r": 0.002})
    spikes = model.simulate(data, 3000, seed=3, verbose=False)
    assert spikes.max() == 1 and spikes.float().mean() > 0.01


class TwoBasisBernoulli(BernoulliGLM):
    """Coupling kernels on two basis functions (fast and slow exponentials); the network
    carries a weight per edge and basis function, W0 [E, 2]."""

    def coupling_basis(self):
        lag = torch.arange(self.window, device=self.dt.device, dtype=torch.float32)
        return torch.stack([torch.exp(-lag), torch.exp(-lag / 4)]) * (lag < self.coupling_window)


def two_basis_network(n_networks: int = 2, n_neurons: int = 20) -> Data:
    data = batch_of_networks(n_networks, n_neurons)
    generator = torch.Generator().manual_seed(5)
    data.W0 = torch.stack([data.W0, torch.randn(len(data.W0), generator=generator)], 1)
    return data


def test_a_basis_of_coupling_kernels_simulates_and_teacher_forces_exactly():
    data = two_basis_network()
    raster = (torch.rand(40, 300, generator=torch.Generator().manual_seed(4)) < 0.1).float()

    class Forced(TwoBasisBernoulli, ForcedBernoulli):
        pass

    recorded = {}
    for engine in ("fast", "reference"):
        model = Forced(raster)
        model.simulate(data, 300, seed=5, equilibration_steps=0, verbose=False, engine=engine)
        recorded[engine] = torch.stack(model.inputs)
    assert torch.allclose(recorded["fast"], recorded["reference"], atol=1e-5)
    model = Forced(raster)
    forced = model.input_from_spikes(data, raster.unsqueeze(0))[0, :, 20:]
    assert torch.allclose(forced, recorded["fast"].t()[:, 20:], atol=1e-4)
    W, _ = model.connectivity_filter(data.W0, data.edge_index, 40)
    basis = model.coupling_basis().flip(-1)
    assert torch.allclose(W[: len(data.W0)], data.W0 @ basis)  # W[e] = Σ_b w_eb B_b flipped
    spikes = TwoBasisBernoulli(**SEED_GLM).simulate(data, 2000, seed=1, verbose=False)
    assert 0 < spikes.float().mean() < 0.1


def test_raised_cosine_bases_by_hand():
    from spikefit.models.bases import Exponentials, RaisedCosineLinear, RaisedCosineLog

    c = 0.5 * (1 + math.cos(math.pi / 4))  # 0.8536: a quarter of the way down a bump
    expected = torch.tensor([[1, c, 0.5, 1 - c, 0], [0.5, c, 1, c, 0.5], [0, 1 - c, 0.5, c, 1]])
    linear = RaisedCosineLinear(3, 5)()  # peaks at lags 0, 2, 4, half-width 2 spacings
    assert linear.shape == (3, 5) and torch.allclose(linear, expected, atol=1e-6)
    assert linear.sum(0)[2].item() == pytest.approx(2.0)  # width 2: the bumps sum to 2
    # log-stretched, c = 1: u = log(1 + τ) / log 3 = (0, 0.631, 1); width 1
    log = RaisedCosineLog(2, 3, offset=1.0, width=1.0)()
    u = math.log(2) / math.log(3)
    assert torch.allclose(
        log,
        torch.tensor(
            [
                [1, 0.5 * (1 + math.cos(math.pi * u)), 0],
                [0, 0.5 * (1 + math.cos(math.pi * (u - 1))), 1],
            ]
        ),
        atol=1e-6,
    )
    assert torch.allclose(log.sum(0), torch.ones(3), atol=1e-6)  # width 1: a partition of 1
    peaks = RaisedCosineLog(8, 100)().argmax(1)  # log-spaced: the gaps grow with the lag
    gaps = peaks[1:] - peaks[:-1]
    assert peaks[0] == 0 and peaks[-1] == 99
    assert (gaps[1:] >= gaps[:-1]).all() and gaps[-1] > 10 * gaps[0]
    exponentials = Exponentials([1.0, 4.0], 3)()
    assert torch.allclose(
        exponentials,
        torch.tensor([[1, math.exp(-1), math.exp(-2)], [1, math.exp(-0.25), math.exp(-0.5)]]),
    )
    with pytest.raises(InputError, match=r"^RaisedCosineLog\.n_basis: "):
        RaisedCosineLog(0, 10)
    with pytest.raises(InputError, match=r"^Exponentials\.time_constants\[1\]: "):
        Exponentials([1.0, -2.0], 10)


def test_a_tabulated_basis_is_its_values_and_refuses_bad_tables():
    from spikefit.models import FilterGLM
    from spikefit.models.bases import Tabulated

    values = [[0.0, 1.0, 0.5], [2.0, 0.0, 0.0]]
    basis = Tabulated(values)
    assert (basis.n_basis, basis.window_steps) == (2, 3)
    assert torch.equal(basis(), torch.tensor(values))
    model = FilterGLM(coupling_basis=basis, dt=1.0)
    assert torch.equal(model.coupling_basis(), torch.tensor(values))
    for bad in ([1.0, 2.0], [[1.0, float("nan")]], [[1.0, 0.0], [0.0, 0.0]]):
        with pytest.raises(InputError, match=r"^Tabulated\.values: "):
            Tabulated(bad)
