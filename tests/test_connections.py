"""Uncertainty and connection calls of likelihood fits, against values derived by hand:
q-values, χ² p-values, Wald statistics and inverses of small blocks; analytic standard errors
of bias-only fits; the false discovery rate on uncoupled neurons; standard errors against the
spread of repeated fits, and the calls and outputs of strongly coupled networks."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from torch_geometric.data import Data

from spikefit.checks import InputError
from spikefit.data import SpikeTrainDataModule
from spikefit.datasets import dense_to_graph
from spikefit.models import BernoulliGLM, PoissonGLM
from spikefit.tasks import LBFGS, LikelihoodFit, Newton
from spikefit.tasks.calibration import SEED_INTRODUCTION
from spikefit.tasks.likelihood.newton import LinearDesign, pair_entries
from spikefit.tasks.likelihood.uncertainty import (
    CALL_NAMES,
    benjamini_hochberg,
    block_covariance,
    chi_square_survival,
    wald_statistics,
)
from tests.test_likelihood import TwoBasisGLM, trainer

NAN = math.nan
#: The seed BernoulliGLM at a higher rate (θ = 3: p ≈ 0.05 per bin without input).
ACTIVE = SEED_INTRODUCTION | dict(theta=3.0)


def test_benjamini_hochberg_q_values_by_hand():
    # sorted: 0.01, 0.03, 0.04, 0.20 (m = 4 finite); m·p/rank: 0.04, 0.06, 0.0533, 0.20;
    # minimum from the largest down: 0.04, 0.0533, 0.0533, 0.20
    p = torch.tensor([0.04, 0.20, 0.01, NAN, 0.03], dtype=torch.float64)
    q = benjamini_hochberg(p)
    expected = torch.tensor([0.16 / 3, 0.20, 0.04, NAN, 0.16 / 3], dtype=torch.float64)
    torch.testing.assert_close(q, expected, equal_nan=True)
    # capped at 1: m·p/rank = 3·0.9/2 = 1.35 for both of the last two
    q = benjamini_hochberg(torch.tensor([0.9, 0.9, 0.001], dtype=torch.float64))
    torch.testing.assert_close(q, torch.tensor([0.9, 0.9, 0.003], dtype=torch.float64))


def test_chi_square_p_values_by_hand():
    x = torch.tensor([0.0, 1.0, 3.0, 10.0], dtype=torch.float64)
    # 2 dof: exp(-x/2); 4 dof: exp(-x/2)(1 + x/2); 1 dof: P(|Z| > √x) = erfc(√(x/2))
    torch.testing.assert_close(chi_square_survival(x, 2), torch.exp(-x / 2))
    torch.testing.assert_close(chi_square_survival(x, 4), torch.exp(-x / 2) * (1 + x / 2))
    expected = torch.tensor([math.erfc(math.sqrt(v / 2)) for v in x.tolist()], dtype=x.dtype)
    torch.testing.assert_close(chi_square_survival(x, 1), expected)
    assert float(chi_square_survival(torch.tensor([1.96**2]), 1)) == pytest.approx(0.05, abs=1e-4)


def test_wald_statistics_by_hand():
    estimates = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [1.0, 2.0]], dtype=torch.float64)
    covariance = torch.tensor(
        [
            [[2.0, 0.0], [0.0, 4.0]],  # 1/2 + 4/4 = 1.5
            [[2.0, 1.0], [1.0, 2.0]],  # inverse [[2, -1], [-1, 2]]/3: (2 - 4 + 8)/3 = 2
            [[1.0, 1.0], [1.0, 1.0]],  # singular
            [[NAN, 0.0], [0.0, 1.0]],  # unknown
        ],
        dtype=torch.float64,
    )
    statistic = wald_statistics(estimates, covariance)
    expected = torch.tensor([1.5, 2.0, NAN, NAN], dtype=torch.float64)
    torch.testing.assert_close(statistic, expected, equal_nan=True)


def test_block_covariance_inverts_fitted_entries_and_gives_nan_for_singular_blocks():
    information = torch.tensor(
        [
            [[4.0, 2.0, 9.0], [2.0, 2.0, 9.0], [9.0, 9.0, 1.0]],  # entry 2 not fitted
            [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 3.0]],  # singular
            [[4.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]],  # entry 1 uninformed
        ]
    )
    free = torch.tensor([[True, True, False], [True, True, True], [True, True, True]])
    covariance = block_covariance(information, free)
    # [[4, 2], [2, 2]]⁻¹ = [[2, -2], [-2, 4]]/4
    expected = torch.tensor(
        [
            [[0.5, -0.5, NAN], [-0.5, 1.0, NAN], [NAN, NAN, NAN]],
            [[NAN] * 3] * 3,
            [[0.25, NAN, 0.0], [NAN, NAN, NAN], [0.0, NAN, 1.0]],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(covariance, expected, equal_nan=True)


def test_dense_and_sparse_products_equal_the_hessian_by_its_definition():
    generator = torch.Generator().manual_seed(0)
    traces = torch.rand(50, 6, generator=generator) * (torch.rand(50, 6, generator=generator) < 0.3)
    local = torch.randn(50, 4, 2, generator=generator)
    w = torch.randn(50, 4, generator=generator)
    r = torch.tensor([1.0, 2.0, 0.5, -1.0])
    x = torch.cat([r.view(1, 4, 1) * traces.unsqueeze(1).expand(50, 4, 6), local], dim=2)
    expected = torch.einsum("ti,tia,tib->iab", w, x, x)  # Σ_t w_ti x_ti x_tiᵀ
    for max_pairs, dense in ((10_000, False), (1, True)):
        design = LinearDesign(traces, local, r, max_pairs, dense_beyond=dense)
        assert (design.pairs is None) == dense
        torch.testing.assert_close(design.blocks(torch.zeros_like(w), w)[1], expected)
    with pytest.raises(InputError, match="Newton.max_pairs"):
        LinearDesign(traces, local, r, 1)


@pytest.mark.parametrize("solver", [Newton, LBFGS])
def test_standard_errors_of_bias_only_fits_are_analytic(tmp_path, solver):
    generator = torch.Generator().manual_seed(1)
    rates = torch.tensor([0.05, 0.1, 0.3]).view(3, 1).expand(3, 4000)
    # Poisson, log link: the information of b_i is Σ_t μ_ti = Σ_t X_ti at the optimum
    counts = torch.poisson(rates, generator=generator)
    poisson = PoissonGLM(alpha=1.0, beta=1.0, T=1, tau=1.0, dt=1.0, r=1.0, b=-1.0)
    task = LikelihoodFit(poisson, per_neuron=["b"], coupling="none", solver=solver())
    trainer(tmp_path, max_epochs=5).fit(
        task, SpikeTrainDataModule(spikes=counts, heldout_fraction=0)
    )
    expected = counts.sum(1).rsqrt()
    torch.testing.assert_close(task.standard_errors[:, 0].float(), expected, rtol=1e-3, atol=0)
    assert task.summary()["standard_errors"]["b"] == pytest.approx(expected.tolist(), rel=1e-3)
    # Bernoulli, logistic link, no refractory input: p = σ(-θ), information n·p(1 - p)
    spikes = torch.bernoulli(rates, generator=generator)
    silent = dict(abs_ref_strength=0.0, rel_ref_strength=0.0)
    bernoulli = BernoulliGLM(**SEED_INTRODUCTION | silent)
    task = LikelihoodFit(bernoulli, per_neuron=["theta"], coupling="none", solver=solver())
    trainer(tmp_path, max_epochs=5).fit(
        task, SpikeTrainDataModule(spikes=spikes, heldout_fraction=0)
    )
    n, p = 4000, spikes.mean(1)
    expected = (n * p * (1 - p)).rsqrt()
    torch.testing.assert_close(task.standard_errors[:, 0].float(), expected, rtol=1e-3, atol=0)


def coupled_fit(spikes: torch.Tensor, tmp_path, **options) -> LikelihoodFit:
    """The seed BernoulliGLM's thresholds and dense coupling fitted to ``spikes`` by Newton."""
    task = LikelihoodFit(
        BernoulliGLM(**ACTIVE), per_neuron=["theta"], coupling="dense", solver=Newton(), **options
    )
    trainer(tmp_path, max_epochs=5).fit(
        task, SpikeTrainDataModule(spikes=spikes, heldout_fraction=0)
    )
    assert task.converged
    return task


def test_uncoupled_neurons_are_called_at_most_at_the_false_discovery_rate(tmp_path):
    # 10 uncoupled neurons, 90 pairs, 6 recordings of 3,000 bins (~100 spikes per neuron).
    # With no true connection every call is false: Benjamini–Hochberg keeps P(any call) ≤ q
    # and the fraction of pairs called far below q; 0.02 allows for sampling. The p-values
    # of true nulls are uniform: 5% of the 540 below 0.05 (binomial sd 1%).
    n, q = 10, 0.05
    pairs = (~torch.eye(n, dtype=torch.bool)).nonzero().t()
    uncoupled = Data(edge_index=pairs, W0=torch.zeros(pairs.shape[1]), num_nodes=n)
    called, p_values = [], []
    for seed in range(6):
        spikes = BernoulliGLM(**ACTIVE).simulate(uncoupled, 3_000, seed=seed, verbose=False)
        connections = coupled_fit(spikes, tmp_path / str(seed), fdr=q).connections
        called.append(float((connections.call != 0).float().mean()))
        p_values.append(connections.p)
    assert sum(called) / len(called) <= q + 0.02
    p = torch.cat(p_values)
    assert 0.01 <= float((p < 0.05).double().mean()) <= 0.10
    assert float(p.mean()) == pytest.approx(0.5, abs=0.06)


def test_standard_errors_match_the_spread_of_repeated_fits_and_strong_pairs_are_called(
    tmp_path,
):
    # 6 neurons with 4 strong pairs (+3 and -2 on a kernel of area ≈ 3.6; a stronger
    # inhibition silences the postsynaptic neuron, the estimate diverges and the Wald test
    # loses its power), 6 recordings of 8,000 bins: the standard error of every weight
    # against the standard deviation of its 6 estimates, pooled over the 30 pairs (the
    # pooled sd is known to ~7%, hence 20%)
    W0 = torch.zeros(6, 6)
    W0[0, 1], W0[2, 3], W0[4, 5], W0[5, 0] = 3.0, -2.0, 3.0, -2.0
    network = dense_to_graph(W0)
    estimates, errors = [], []
    for seed in range(6):
        spikes = BernoulliGLM(**ACTIVE).simulate(network, 8_000, seed=10 + seed, verbose=False)
        task = coupled_fit(spikes, tmp_path / str(seed))
        post, columns = pair_entries(task)
        estimates.append(task.coupling_weights.detach().double())
        errors.append(task.standard_errors[post, columns])
        true = W0[tuple(task.connections.edge_index)]
        assert torch.equal(task.connections.call[true != 0], true[true != 0].sign().long())
    spread = torch.stack(estimates).var(0).mean().sqrt()  # over the recordings, pooled
    error = torch.stack(errors).square().mean().sqrt()
    assert float(error / spread) == pytest.approx(1.0, abs=0.2)


def test_outputs_of_the_calls_on_a_basis(tmp_path, capsys):
    # two coupling kernels per pair: the Wald test of 2 weights, the call by the sign of the
    # filter's area Σ_b w_b Σ_τ B_b(τ)
    n = 8
    network = Data(
        edge_index=torch.tensor([[0, 2], [1, 3]]),
        W0=torch.tensor([[3.0, 0.5], [-1.0, -1.0]]),
        num_nodes=n,
    )
    faster = SEED_INTRODUCTION | dict(theta=2.0)  # p ≈ 0.06: inhibition has spikes to remove
    spikes = TwoBasisGLM(**faster).simulate(network, 10_000, seed=5, verbose=False)
    task = LikelihoodFit(
        TwoBasisGLM(**SEED_INTRODUCTION),
        per_neuron=["theta"],
        refractory_scale=True,
        solver=Newton(),
        fdr=0.01,
    )
    trainer(tmp_path, max_epochs=5).fit(task, SpikeTrainDataModule(spikes=spikes))
    with open(tmp_path / "connections.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["pre", "post", "summed_weight", "statistic", "p", "q", "call"]
    assert len(rows) == n * (n - 1)
    calls = {(int(row["pre"]), int(row["post"])): row["call"] for row in rows}
    assert calls[0, 1] == "excitatory" and calls[2, 3] == "inhibitory"
    area = task.coupling_weights[0].detach() @ task.model.coupling_basis().sum(1)  # 0 → 1
    assert float(rows[0]["summed_weight"]) == pytest.approx(float(area), rel=1e-5)
    for row in rows:  # a call where q ≤ 0.01, by the sign of the summed filter
        called = float(row["q"]) <= 0.01
        sign = "excitatory" if float(row["summed_weight"]) > 0 else "inhibitory"
        assert row["call"] == (sign if called else "none")
    summary = json.loads((tmp_path / "summary.json").read_text())
    counts = {name: sum(row["call"] == name for row in rows) for name in CALL_NAMES.values()}
    assert summary["connections"] == counts | {"fdr": 0.01}
    errors = summary["standard_errors"]
    assert len(errors["theta"]) == len(errors["refractory_scale"]) == n
    assert (tmp_path / "connections.png").is_file()
    line = (
        f"connections at FDR q ≤ 0.01: {counts['excitatory']} excitatory, "
        f"{counts['inhibitory']} inhibitory, {counts['none']} none"
    )
    assert line in capsys.readouterr().out
