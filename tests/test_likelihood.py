"""Likelihood fits: hand-computed likelihoods, parameter and coupling recovery, solvers, DDP,
outputs and bad input."""

import json
import math
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from spikefit.data import SpikeTrainDataModule
from spikefit.datasets import NormalGenerator, graph_to_dense
from spikefit.io import write_spike_times
from spikefit.models import BernoulliGLM, PoissonGLM, RectifiedSAM, ThresholdSAM
from spikefit.tasks import L1, L2, LBFGS, Adam, LikelihoodFit, Newton
from spikefit.tasks.calibration import SEED_INTRODUCTION
from tests import QUIET

TINY_GLM = dict(
    theta=1.0,
    dt=1,
    coupling_window=2,
    alpha=0.5,
    abs_ref_scale=1,
    abs_ref_strength=-2.0,
    rel_ref_scale=1,
    rel_ref_strength=-1.0,
    beta=0.3,
    r=1.0,
)
TINY_W0 = torch.tensor([[0.0, 2.0], [-1.0, 0.0]])  # 0 → 1: 2, 1 → 0: -1 ([pre, post])
TINY_X = torch.tensor([[1, 0, 1, 0, 0, 1], [0, 1, 0, 0, 1, 0]], dtype=torch.float32)


def trainer(root: Path, **options) -> L.Trainer:
    return L.Trainer(**(QUIET | dict(max_epochs=20, default_root_dir=root) | options))


def simulate(model_class, parameters: dict, n: int, steps: int, seed: int, std: float = 5.0):
    network = NormalGenerator(n, mean=0, std=std, glorot=True, seed=seed).generate(1)[0]
    spikes = model_class(**parameters).simulate(network, steps, seed=seed + 1, verbose=False)
    return network, spikes


def test_log_likelihood_equals_hand_computation(tmp_path):
    # kernels: c(0) = 1, c(1) = e^-0.5; ref(0) = -2 (absolute), ref(1) = -1·e^0 = -1
    e = math.exp(-0.5)
    g = [
        [0.0, -2.0, -1 - 1, -2 - e, -1.0, -1.0],  # neuron 0: own history + (-1)·neuron 1
        [0.0, 2.0, -2 + 2 * e, -1 + 2, 2 * e, -2.0],
    ]  # neuron 1: own history + 2·neuron 0
    expected = 0.0
    for i in range(2):
        for t in range(6):
            p = 1 / (1 + math.exp(-(g[i][t] - 1.0)))  # sigmoid(g - theta)·dt, dt = 1
            expected += math.log(p) if TINY_X[i, t] else math.log(1 - p)
    task = LikelihoodFit(BernoulliGLM(**TINY_GLM), fit=["theta"], coupling="fixed")
    # chunks of 4 bins: the second chunk carries two bins of history
    data = SpikeTrainDataModule(spikes=TINY_X, network=TINY_W0, heldout_fraction=0, chunk_bins=4)
    trainer(tmp_path).validate(task, data)
    per_bin = task.results["log_likelihood_per_bin"]["train"]
    assert per_bin * 12 == pytest.approx(expected, abs=1e-5)


def test_poisson_log_likelihood_equals_hand_computation(tmp_path):
    counts = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0]])
    model = PoissonGLM(alpha=2.0, beta=0.5, T=1, tau=1.0, dt=1.0, r=1.0, b=0.2)
    # mu = dt/alpha·exp(beta·g); g(t) = b + W0 · X(t-1) with W0: 0 → 1 weight 1, 1 → 0 weight -1
    g = [[0.2, 0.2, 0.2 - 3], [0.2, 0.2 + 2, 0.2]]
    X = counts.tolist()  # plain floats: the hand computation owes nothing to torch
    expected = sum(
        X[i][t] * math.log(0.5 * math.exp(0.5 * g[i][t]))
        - 0.5 * math.exp(0.5 * g[i][t])
        - math.lgamma(X[i][t] + 1)
        for i in range(2)
        for t in range(3)
    )
    task = LikelihoodFit(model, fit=["b"], coupling="fixed")
    data = SpikeTrainDataModule(
        spikes=counts, network=torch.tensor([[0.0, 1.0], [-1.0, 0.0]]), heldout_fraction=0
    )
    trainer(tmp_path).validate(task, data)
    assert task.results["log_likelihood_per_bin"]["train"] * 6 == pytest.approx(expected, abs=1e-5)


def test_rectified_sam_likelihood_follows_the_activation_recursion(tmp_path):
    paper = dict(lambda_0=1.0861, theta=-0.0137, tau=10.0, dt=0.1, r=0.025, b=0.001)
    network, spikes = simulate(RectifiedSAM, paper, 10, 3_000, seed=50)
    W0, X = graph_to_dense(network), spikes.float()
    activation, expected = torch.zeros(10), 0.0
    for t in range(X.shape[1]):  # s(t) = s(t-1)(1 - dt/tau) + X(t) dt; g(t+1) uses s(t)
        g = 0.025 * W0.t() @ activation + 0.001
        mu = (1.0861 * 0.1 * torch.relu(g + 0.0137)).clamp(min=1e-8)
        expected += float((X[:, t] * mu.log() - mu - torch.lgamma(X[:, t] + 1)).sum())
        activation = activation * (1 - 0.1 / 10) + X[:, t] * 0.1
    # one chunk is exact; chunks of 1,000 bins carry 5·tau/dt = 500 bins of history, whose
    # older spikes the activation has forgotten to e^-5
    for chunk_bins, tolerance in ((3_000, 1e-5), (1_000, 1e-3)):
        task = LikelihoodFit(RectifiedSAM(**paper), fit=["b"], coupling="fixed")
        data = SpikeTrainDataModule(
            spikes=spikes, dt_ms=0.1, network=W0, heldout_fraction=0, chunk_bins=chunk_bins
        )
        trainer(tmp_path).validate(task, data)
        total = task.results["log_likelihood_per_bin"]["train"] * X.numel()
        assert total == pytest.approx(expected, rel=tolerance)


def test_bernoulli_glm_parameters_recovered(tmp_path):
    # 20 neurons × 60,000 steps at ~7 Hz: ~400 spikes per neuron. A threshold's standard
    # error is ≈ 1/sqrt(spikes) ≈ 0.05 per neuron (0.011 shared over all neurons), so 0.25 per
    # neuron and 0.05 for r (which all spikes inform) are about five standard errors.
    network, spikes = simulate(BernoulliGLM, SEED_INTRODUCTION, 20, 60_000, seed=10)
    start = SEED_INTRODUCTION | dict(theta=4.0, r=0.5)
    task = LikelihoodFit(BernoulliGLM(**start), fit=["r"], per_neuron=["theta"], coupling="fixed")
    data = SpikeTrainDataModule(spikes=spikes, network=graph_to_dense(network), chunk_bins=20_000)
    trainer(tmp_path).fit(task, data)
    theta = task.model.theta.detach()
    assert task.converged
    assert theta.shape == (20,)
    assert (theta - 5).abs().max() < 0.25 and abs(theta.mean() - 5) < 0.05
    assert float(task.model.r) == pytest.approx(1.0, abs=0.15)


def test_poisson_glm_parameters_recovered(tmp_path):
    # ~0.02 spikes per step: 20 × 50,000 steps give ~20,000 spikes; b (shared) then has a
    # standard error ≈ 1/sqrt(20,000) ≈ 0.007 and r a few times that. (std 1.5: with the
    # exponential link, networks of std 3 run away within 50,000 steps for 7 seeds in 10.)
    truth = dict(alpha=20.0, beta=1.0, T=10, tau=3.0, dt=1.0, r=1.0, b=-1.0)
    network, spikes = simulate(PoissonGLM, truth, 20, 50_000, seed=20, std=1.5)
    task = LikelihoodFit(
        PoissonGLM(**truth | dict(b=-2.0, r=0.3)), fit=["b", "r"], coupling="fixed"
    )
    data = SpikeTrainDataModule(spikes=spikes, network=graph_to_dense(network))
    trainer(tmp_path).fit(task, data)
    assert float(task.model.b) == pytest.approx(-1.0, abs=0.04)
    assert float(task.model.r) == pytest.approx(1.0, abs=0.1)


def test_coupling_recovered_and_outputs_written(tmp_path):
    # 20 neurons at ~19 Hz (theta 4) for 40,000 steps: ~750 spikes per neuron
    network, spikes = simulate(
        BernoulliGLM, SEED_INTRODUCTION | dict(theta=4.0), 20, 40_000, seed=30
    )
    task = LikelihoodFit(
        BernoulliGLM(**SEED_INTRODUCTION),
        per_neuron=["theta"],
        refractory_scale=True,
        coupling="dense",
    )
    data = SpikeTrainDataModule(spikes=spikes, network=graph_to_dense(network))
    trainer(tmp_path).fit(task, data)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["task"] == "likelihood"
    assert summary["edge_auroc"] > 0.8
    assert summary["weight_correlation"] > 0.7
    assert summary["bits_per_spike"]["heldout"] > 0.1
    assert (
        summary["log_likelihood_per_bin"]["train"]
        > summary["log_likelihood_per_bin"]["heldout"] - 0.01
    )
    assert len(summary["parameters"]["theta"]) == 20 and "refractory_scale" in summary["parameters"]
    assert summary["wall_time_s"] > 0
    fitted = np.load(tmp_path / "fitted_W0.npy")
    assert fitted.shape == (20, 20) and np.all(np.diag(fitted) == 0)
    assert (tmp_path / "coupling.png").is_file()


def test_lbfgs_newton_and_adam_reach_the_same_optimum(tmp_path):
    network, spikes = simulate(
        BernoulliGLM, SEED_INTRODUCTION | dict(theta=4.0), 8, 20_000, seed=40
    )
    fits = {}
    for name, solver, epochs in (
        ("lbfgs", LBFGS(), 10),
        ("newton", Newton(), 10),
        ("adam", Adam(lr=0.05), 300),
    ):
        task = LikelihoodFit(
            BernoulliGLM(**SEED_INTRODUCTION),
            per_neuron=["theta"],
            coupling="dense",
            refractory_scale=name != "adam",
            regularizer=L2(1e-4),
            solver=solver,
        )
        data = SpikeTrainDataModule(spikes=spikes, heldout_fraction=0)
        check = epochs if name == "adam" else 1  # L-BFGS and Newton stop once converged
        trainer(tmp_path / name, max_epochs=epochs, check_val_every_n_epoch=check).fit(task, data)
        fits[name] = task
    lbfgs, newton, adam = fits["lbfgs"], fits["newton"], fits["adam"]
    assert newton.converged and newton.results["log_likelihood_per_bin"]["train"] >= (
        lbfgs.results["log_likelihood_per_bin"]["train"] - 1e-7
    )
    # L-BFGS stops within ~1e-8 nats per bin of the optimum, a few 1e-3 from it in weights
    # and ~1e-2 in the refractory scales (which the rare spikes right after a spike inform)
    assert torch.allclose(newton.coupling_weights, lbfgs.coupling_weights, atol=5e-3)
    assert torch.allclose(newton.refractory_scale, lbfgs.refractory_scale, atol=0.02)
    assert torch.allclose(newton.model.theta, lbfgs.model.theta, atol=5e-3)
    # Adam (no refractory scale: a slightly smaller model) on the same data
    lbfgs_fixed_scale = LikelihoodFit(
        BernoulliGLM(**SEED_INTRODUCTION),
        per_neuron=["theta"],
        coupling="dense",
        regularizer=L2(1e-4),
    )
    trainer(tmp_path / "lbfgs_fixed", max_epochs=10, check_val_every_n_epoch=1).fit(
        lbfgs_fixed_scale, SpikeTrainDataModule(spikes=spikes, heldout_fraction=0)
    )
    assert adam.results["log_likelihood_per_bin"]["train"] == pytest.approx(
        lbfgs_fixed_scale.results["log_likelihood_per_bin"]["train"], abs=1e-5
    )
    assert torch.allclose(adam.coupling_weights, lbfgs_fixed_scale.coupling_weights, atol=0.02)
    assert torch.allclose(adam.model.theta, lbfgs_fixed_scale.model.theta, atol=0.02)


@pytest.mark.parametrize(
    "model, fitted",
    [
        (BernoulliGLM(**SEED_INTRODUCTION), dict(per_neuron=["theta"], refractory_scale=True)),
        (
            PoissonGLM(alpha=20.0, beta=1.0, T=10, tau=3.0, dt=1.0, r=1.0, b=-1.0),
            dict(per_neuron=["b"], coupling="graph"),
        ),
    ],
)
def test_newton_blocks_equal_the_autograd_gradient_and_hessian(tmp_path, model, fitted):
    network, spikes = simulate(
        type(model),
        SEED_INTRODUCTION | dict(theta=3.0)
        if isinstance(model, BernoulliGLM)
        else dict(alpha=20.0, beta=1.0, T=10, tau=3.0, dt=1.0, r=1.0, b=-1.0),
        6,
        3_000,
        seed=41,
        std=3.0,
    )
    task = LikelihoodFit(model, regularizer=L2(1e-3), solver=Newton(), **fitted)
    data = SpikeTrainDataModule(
        spikes=spikes, network=graph_to_dense(network), heldout_fraction=0, chunk_bins=1_000
    )
    assert_newton_blocks_match_autograd(task, data, tmp_path)


class TwoBasisGLM(BernoulliGLM):
    """The seed BernoulliGLM with coupling kernels on two exponentials (weights [E, 2])."""

    def coupling_basis(self):
        lag = torch.arange(self.window, dtype=torch.float32)
        return torch.stack([torch.exp(-lag), torch.exp(-lag / 4)]) * (lag < self.coupling_window)


def two_basis_recording(n: int, steps: int, seed: int):
    network = NormalGenerator(n, mean=0, std=3, glorot=True, seed=seed).generate(1)[0]
    generator = torch.Generator().manual_seed(seed)
    network.W0 = torch.stack(
        [network.W0, torch.randn(len(network.W0), generator=generator) * network.W0.abs().mean()], 1
    )
    model = TwoBasisGLM(**SEED_INTRODUCTION | dict(theta=3.0))
    return network, model.simulate(network, steps, seed=seed + 1, verbose=False)


def test_newton_blocks_on_a_basis_equal_the_autograd_gradient_and_hessian(tmp_path):
    _, spikes = two_basis_recording(6, 3_000, seed=41)
    task = LikelihoodFit(
        TwoBasisGLM(**SEED_INTRODUCTION),
        per_neuron=["theta"],
        refractory_scale=True,
        regularizer=L2(1e-3),
        solver=Newton(),
    )
    data = SpikeTrainDataModule(spikes=spikes, heldout_fraction=0, chunk_bins=1_000)
    assert_newton_blocks_match_autograd(task, data, tmp_path)
    assert task.coupling_weights.shape == (30, 2) and task.block_mask().shape == (6, 14)


def test_coupling_filters_on_a_basis_are_recovered(tmp_path):
    network, spikes = two_basis_recording(12, 40_000, seed=3)
    task = LikelihoodFit(
        TwoBasisGLM(**SEED_INTRODUCTION), per_neuron=["theta"], coupling="graph", solver=Newton()
    )
    trainer(tmp_path).fit(
        task, SpikeTrainDataModule(spikes=spikes, heldout_fraction=0.2, network=network)
    )
    assert task.converged
    fitted, true = task.coupling_weights.detach(), network.W0
    for b in range(2):
        assert torch.corrcoef(torch.stack([fitted[:, b], true[:, b]]))[0, 1] > 0.7
    assert task.coupling_matrix().shape == (12, 12)  # one weight per pair: the filter's area


def assert_newton_blocks_match_autograd(
    task: LikelihoodFit, data: SpikeTrainDataModule, tmp_path: Path
) -> None:
    """Newton's block gradient and Hessian-vector products equal autograd's on the whole
    objective, away from the zero start."""
    trainer(tmp_path, max_epochs=0).fit(task, data)  # set up, no step
    params = [p for p in task.parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # away from the zero start, where many terms vanish
        for p in params:
            p.add_(torch.randn(p.shape, generator=generator) * 0.3)
    chunks = list(data._chunks(0, data.n_train_bins))
    prepared = {
        k: (
            task.model.spike_traces(chunk["spikes"].unsqueeze(0)),
            chunk["spikes"][:, -chunk["bins"] :].t().to_sparse().coalesce(),
        )
        for k, chunk in enumerate(chunks)
    }
    scale = torch.tensor(1.0 / (data.n_train_bins * task.n_neurons))
    system = task.newton_system(chunks, prepared.__getitem__, scale, objective=None)
    objective, gradient, hessian = system.blocks()

    class Objective(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.task = task

        def forward(self) -> torch.Tensor:
            return (
                sum(
                    -task.chunk_log_likelihood(chunk, *prepared[k])
                    for k, chunk in enumerate(chunks)
                )
                * scale
                + task.penalty()
            )

    names = [f"task.{name}" for name, p in task.named_parameters() if p.requires_grad]

    def total(*values: torch.Tensor) -> torch.Tensor:
        """The objective as a function of the fitted parameters' values."""
        return torch.func.functional_call(Objective(), dict(zip(names, values, strict=True)), ())

    values = tuple(p.detach().clone() for p in params)
    assert float(objective) == pytest.approx(float(total(*values)), rel=1e-6)
    expected = torch.autograd.functional.jacobian(total, values)
    for block, exact in zip(system.to_parameters(gradient), expected, strict=True):
        torch.testing.assert_close(block, exact, rtol=1e-4, atol=1e-9)
    direction = torch.randn(gradient.shape, generator=generator) * task.block_mask()
    _, expected = torch.autograd.functional.hvp(
        total, values, tuple(system.to_parameters(direction))
    )
    products = (hessian @ direction.unsqueeze(-1)).squeeze(-1)
    for block, exact in zip(system.to_parameters(products), expected, strict=True):
        torch.testing.assert_close(block, exact, rtol=1e-3, atol=1e-8)


def test_newton_rejects_fits_without_per_neuron_linear_blocks(tmp_path):
    network, spikes = simulate(BernoulliGLM, SEED_INTRODUCTION, 4, 500, seed=42)
    poisson = PoissonGLM(alpha=20.0, beta=1.0, T=10, tau=3.0, dt=1.0, r=1.0, b=-1.0)
    bad_fits = [
        (
            LikelihoodFit(BernoulliGLM(**SEED_INTRODUCTION), fit=["theta"], solver=Newton()),
            "would be shared by all neurons",
        ),
        (
            LikelihoodFit(
                BernoulliGLM(**SEED_INTRODUCTION),
                per_neuron=["theta"],
                regularizer=L1(1e-3),
                solver=Newton(),
            ),
            "L1 has no second derivative",
        ),
        (
            LikelihoodFit(poisson, per_neuron=["beta"], coupling="none", solver=Newton()),
            "'beta' does not shift the input",
        ),
    ]
    for task, message in bad_fits:
        with pytest.raises(ValueError, match=message):
            trainer(tmp_path).fit(task, SpikeTrainDataModule(spikes=spikes, heldout_fraction=0))


def test_ddp_over_two_processes_gives_the_one_process_fit(tmp_path):
    script = Path(__file__).with_name("ddp_likelihood_fit.py")
    results = {}
    runs = ((1, "lbfgs"), (2, "lbfgs"), (2, "newton"), (2, "newton-cg"), (2, "adam"))
    for devices, solver in runs:
        out = tmp_path / f"{solver}{devices}"
        done = subprocess.run(
            [sys.executable, str(script), str(devices), solver, str(out)],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        results[solver, devices] = (
            json.loads((out / "summary.json").read_text()),
            np.load(out / "fitted_W0.npy"),
        )
    one, w_one = results["lbfgs", 1]
    # L-BFGS, Newton and Newton-CG on two time shards: the same optimum; Adam on shards of 2
    # chunks per process: close to it after 60 epochs
    for (two, w_two), tolerance in (
        (results["lbfgs", 2], 1e-3),
        (results["newton", 2], 1e-3),
        (results["newton-cg", 2], 1e-3),
        (results["adam", 2], 0.02),
    ):
        for split in ("train", "heldout"):
            assert two["log_likelihood_per_bin"][split] == pytest.approx(
                one["log_likelihood_per_bin"][split], abs=tolerance / 200
            )
        np.testing.assert_allclose(w_two, w_one, atol=tolerance)
        np.testing.assert_allclose(
            two["parameters"]["theta"], one["parameters"]["theta"], atol=5 * tolerance
        )


def test_chunks_carry_their_history():
    spikes = (torch.rand(3, 50, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    data = SpikeTrainDataModule(spikes=spikes, heldout_fraction=0.2, chunk_bins=15, history_bins=4)
    data.setup()
    chunks = data._chunks(0, data.n_train_bins)
    assert [c["bins"] for c in chunks] == [15, 15, 10]
    assert torch.equal(chunks[1]["spikes"], spikes[:, 11:30]) and chunks[1]["start"] == 11
    assert torch.equal(chunks[0]["spikes"], spikes[:, :15]) and chunks[0]["start"] == 0


def test_reads_recordings_from_files(tmp_path):
    raster = (torch.rand(4, 300, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    path = write_spike_times(tmp_path / "spikes.npz", raster, dt_ms=1.0)
    data = SpikeTrainDataModule(path=str(path), dt_ms=1.0, unit_ids=[2, 0])
    data.setup()
    assert torch.equal(data.spikes, raster[[2, 0]])


def test_bad_input_raises_clear_errors(tmp_path):
    glm = BernoulliGLM(**SEED_INTRODUCTION)
    with pytest.raises(ValueError, match=r"^LikelihoodFit\.fit: \['lambda_0'\] are not "):
        LikelihoodFit(glm, fit=["lambda_0"])
    with pytest.raises(ValueError, match="ThresholdSAM's Threshold emission is deterministic"):
        LikelihoodFit(
            ThresholdSAM(r=0.025, b=0.001, tau=10, dt=0.1, sigma=0.3, rho=0.07, theta=0.001378),
            fit=["b"],
        )
    with pytest.raises(ValueError, match="coupling: 'all' is not a choice"):
        LikelihoodFit(glm, coupling="all")
    with pytest.raises(ValueError, match="only r·W is identifiable"):
        LikelihoodFit(glm, fit=["r"], coupling="dense")
    with pytest.raises(ValueError, match="network: 2 neurons for a recording of 3 units"):
        SpikeTrainDataModule(spikes=torch.zeros(3, 10), network=TINY_W0).setup()
    with pytest.raises(ValueError, match="exactly one of path"):
        SpikeTrainDataModule()
    bad_fits = [
        (LikelihoodFit(glm, fit=["theta"], coupling="graph"), TINY_X, "needs the network"),
        (
            LikelihoodFit(BernoulliGLM(**SEED_INTRODUCTION), per_neuron=["alpha"]),
            TINY_X,
            "cannot all be one value per neuron",
        ),
        (LikelihoodFit(BernoulliGLM(**SEED_INTRODUCTION), fit=["theta"]), TINY_X * 2, "at most 1"),
        (
            LikelihoodFit(BernoulliGLM(**SEED_INTRODUCTION | dict(dt=0.5)), fit=["theta"]),
            TINY_X,
            "differs from the model's dt, 0.5 ms",
        ),
    ]
    for task, spikes, message in bad_fits:
        with pytest.raises(ValueError, match=message):
            trainer(tmp_path).fit(task, SpikeTrainDataModule(spikes=spikes, heldout_fraction=0))
    with pytest.raises(ValueError, match=r"chunks_per_batch: .* \(expected null"):
        trainer(tmp_path).fit(
            LikelihoodFit(glm, fit=["theta"], coupling="none"),
            SpikeTrainDataModule(spikes=TINY_X, chunks_per_batch=1),
        )
    exploding = PoissonGLM(alpha=1.0, beta=1e4, T=2, tau=1.0, dt=1.0, r=1.0, b=1.0)
    with pytest.raises(ValueError, match="negative log-likelihood became"):
        trainer(tmp_path).fit(
            LikelihoodFit(exploding, fit=["b"], coupling="none"),
            SpikeTrainDataModule(spikes=TINY_X, heldout_fraction=0),
        )
