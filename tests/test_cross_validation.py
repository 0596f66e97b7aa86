"""Penalty strengths per unit by cross-validation: the contiguous folds, the choice on data
that favour a strong or a weak ridge, the warm-started path, the refit and the outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from spikefit.checks import InputError
from spikefit.data import SpikeTrainDataModule
from spikefit.datasets import dense_to_graph
from spikefit.models import BernoulliGLM, FilterGLM
from spikefit.tasks import L2, LBFGS, GroupLasso, LikelihoodFit, Newton
from spikefit.tasks.likelihood.cross_validation import chosen_solutions, contiguous_folds
from tests.test_filter_glm import model, network
from tests.test_likelihood import TINY_GLM, assert_newton_blocks_match_autograd, trainer

STRONG, WEAK = 1.0, 1e-4
GLM = TINY_GLM | dict(theta=2.0)


def cv_fit(**options) -> LikelihoodFit:
    settings = dict(
        per_neuron=["theta"],
        regularizer=L2(0.0),
        penalty_grid=[WEAK, STRONG],
        cv_folds=3,
        check_steps=0,
    )
    return LikelihoodFit(BernoulliGLM(**GLM), **(settings | options))


def noise(n: int, bins: int) -> torch.Tensor:
    """Independent spikes (no coupling) with probability 0.1 per bin."""
    return (torch.rand(n, bins, generator=torch.Generator().manual_seed(0)) < 0.1).float()


def coupled(bins: int) -> torch.Tensor:
    """A ring of 4 units, each driven strongly by the one before it."""
    weights = 3.0 * torch.roll(torch.eye(4), 1, dims=1)  # [pre, post]: i → i + 1
    return BernoulliGLM(**GLM).simulate(dense_to_graph(weights), bins, seed=1, verbose=False)


def test_folds_are_contiguous_blocks_covering_the_training_bins():
    assert contiguous_folds(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert contiguous_folds(9, 3) == [(0, 3), (3, 6), (6, 9)]


def test_penalties_weigh_each_pair_by_its_strength():
    weights = torch.tensor([[3.0, 4.0], [1.0, 0.0]])  # two pairs, two basis weights each
    strength = torch.tensor([2.0, 10.0])
    assert float(L2(1.0)(weights, strength)) == pytest.approx(2 * 25 + 10 * 1)
    assert float(L2(0.5)(weights)) == pytest.approx(0.5 * 26)
    lasso = GroupLasso(1.0, smoothing=1e-6)
    assert float(lasso(weights, strength)) == pytest.approx(2 * 5 + 10 * 1, rel=1e-5)


def test_strong_ridge_wins_without_coupling_and_the_refit_uses_it(tmp_path):
    spikes = noise(10, 300)
    task = cv_fit()
    logger = CSVLogger(tmp_path, name="csv")
    trainer(tmp_path, logger=logger).fit(
        task, SpikeTrainDataModule(spikes=spikes, heldout_fraction=0)
    )
    result = task.results["cross_validation"]
    assert result["grid"] == [STRONG, WEAK] and len(result["folds"]) == 3
    assert result["chosen_strength"] == [STRONG] * 10
    assert torch.equal(task.unit_strength, torch.full((10,), STRONG))
    plain = LikelihoodFit(
        BernoulliGLM(**GLM), per_neuron=["theta"], regularizer=L2(STRONG), check_steps=0
    )
    trainer(tmp_path / "plain").fit(plain, SpikeTrainDataModule(spikes=spikes, heldout_fraction=0))
    assert torch.allclose(task.coupling_weights, plain.coupling_weights, atol=1e-4)
    out = Path(logger.log_dir)
    summary = json.loads((out / "summary.json").read_text())["cross_validation"]
    assert len(summary["unit_curves"]) == 10 and len(summary["mean_curve"]) == 2
    assert (out / "cross_validation.png").is_file()
    logged = (out / "metrics.csv").read_text()
    assert "cv/log_likelihood" in logged and "cv/strength" in logged
    assert "cross-validation" in LikelihoodFit.describe(task.summary())


def test_the_last_block_alone_validates_with_the_same_prior(tmp_path, monkeypatch):
    task = cv_fit(cv_folds=6, cv_last_block=True)
    fits = []
    fit_chunks = task.fit_chunks

    def recorded(chunks):
        fit_chunks(chunks)
        bins = set()
        for chunk in chunks:
            stop = chunk["start"] + chunk["spikes"].shape[1]
            bins |= set(range(stop - chunk["bins"], stop))
        fits.append((float(task.unit_strength[0]), bins))

    monkeypatch.setattr(task, "fit_chunks", recorded)
    data = SpikeTrainDataModule(spikes=coupled(360), heldout_fraction=0, chunk_bins=50)
    trainer(tmp_path).fit(task, data)
    assert task.results["cross_validation"]["folds"] == [[300, 360]]
    # the fold's 300 bins carry the penalty of the 360: λ·N·360 nats in both fits
    assert [strength for strength, _ in fits] == pytest.approx([1.2 * STRONG, 1.2 * WEAK])
    assert all(bins == set(range(300)) for _, bins in fits)


def test_the_refit_starts_from_every_units_solution_at_its_chosen_strength(tmp_path):
    task = cv_fit(penalty_grid=None, regularizer=None)
    trainer(tmp_path).fit(task, SpikeTrainDataModule(spikes=coupled(300), heldout_fraction=0))
    weak = task.trainable_state()
    strong = [value + 1.0 for value in weak]
    chosen = torch.tensor([0, 1, 0, 1])  # units 1 and 3 chose the second strength
    names = [name for name, p in task.named_parameters() if p.requires_grad]
    start = dict(zip(names, chosen_solutions(task, [weak, strong], chosen), strict=True))
    post = task.edge_index[1]
    expected = task.coupling_weights.detach() + (post % 2 == 1).float()
    assert torch.equal(start["coupling_weights"], expected)
    expected = task.model.theta.detach() + torch.tensor([0.0, 1.0, 0.0, 1.0])
    assert torch.equal(start["model.theta"], expected)


@pytest.mark.parametrize("solver", [LBFGS(), Newton()], ids=["LBFGS", "Newton"])
def test_weak_ridge_wins_with_strong_coupling(tmp_path, solver):
    task = cv_fit(solver=solver)
    trainer(tmp_path).fit(task, SpikeTrainDataModule(spikes=coupled(3000), heldout_fraction=0.2))
    assert task.results["cross_validation"]["chosen_strength"] == [WEAK] * 4


def test_path_runs_strong_to_weak_with_warm_starts(tmp_path, monkeypatch):
    task = cv_fit(penalty_grid=[WEAK, 0.01, STRONG])
    fits = []
    fit_chunks = task.fit_chunks

    def recorded(chunks):
        before = task.trainable_state()
        fit_chunks(chunks)
        fits.append((float(task.unit_strength[0]), before, task.trainable_state(), chunks))

    monkeypatch.setattr(task, "fit_chunks", recorded)
    data = SpikeTrainDataModule(spikes=coupled(300), heldout_fraction=0, chunk_bins=50)
    trainer(tmp_path, max_epochs=2).fit(task, data)
    # a fold fits on 200 of the 300 training bins: its penalty per bin is 300/200 times λ
    assert [strength for strength, *_ in fits] == pytest.approx(
        [1.5 * STRONG, 0.015, 1.5 * WEAK] * 3
    )
    start = fits[0][1]
    for k, (a, b) in enumerate(contiguous_folds(300, 3)):
        path = fits[3 * k : 3 * k + 3]
        assert all(torch.equal(x, y) for x, y in zip(path[0][1], start, strict=True))
        for previous, current in zip(path, path[1:], strict=False):
            assert all(torch.equal(x, y) for x, y in zip(previous[2], current[1], strict=True))
        covered = set()
        for chunk in path[0][3]:
            stop = chunk["start"] + chunk["spikes"].shape[1]
            covered |= set(range(stop - chunk["bins"], stop))
        assert covered == set(range(300)) - set(range(a, b))


@pytest.mark.parametrize(
    "options, field",
    [
        (dict(penalty_grid=[-1.0]), "LikelihoodFit.penalty_grid"),
        (dict(penalty_grid=[]), "LikelihoodFit.penalty_grid"),
        (dict(regularizer=None), "LikelihoodFit.penalty_grid"),
        (dict(coupling="none"), "LikelihoodFit.penalty_grid"),
        (dict(cv_folds=1), "LikelihoodFit.cv_folds"),
        (dict(regularizer=GroupLasso(0.0), solver=Newton()), "LikelihoodFit.regularizer"),
    ],
)
def test_bad_options_are_one_line(options, field, tmp_path):
    with pytest.raises(InputError) as info:
        task = cv_fit(**options)
        trainer(tmp_path).fit(task, SpikeTrainDataModule(spikes=noise(3, 60)))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{field}: ") and "(expected " in message


def test_more_folds_than_training_bins_is_one_line(tmp_path):
    with pytest.raises(InputError, match=r"^LikelihoodFit.cv_folds: .*\(expected "):
        trainer(tmp_path).fit(
            cv_fit(cv_folds=5), SpikeTrainDataModule(spikes=noise(3, 5), heldout_fraction=0.2)
        )


def ring_and_loners() -> torch.Tensor:
    """400 bins of 10 units: a strongly coupled ring of units 0-3, units 4-9 alone."""
    weights = torch.zeros(10, 10)
    weights[:4, :4] = 3.0 * torch.roll(torch.eye(4), 1, dims=1)
    return BernoulliGLM(**GLM).simulate(dense_to_graph(weights), 400, seed=1, verbose=False)


def test_each_unit_gets_its_own_strength(tmp_path):
    task = cv_fit()
    data = SpikeTrainDataModule(spikes=ring_and_loners(), heldout_fraction=0)
    trainer(tmp_path).fit(task, data)
    chosen = task.results["cross_validation"]["chosen_strength"]
    assert chosen[:4] == [WEAK] * 4 and chosen[4:].count(STRONG) >= 4
    assert task.pair_strengths().tolist() == pytest.approx(
        [chosen[post] for post in task.edge_index[1].tolist()]
    )


def test_one_strength_for_all_units_is_the_best_summed_over_units(tmp_path):
    task = cv_fit(cv_per_unit=False)
    data = SpikeTrainDataModule(spikes=ring_and_loners(), heldout_fraction=0)
    trainer(tmp_path).fit(task, data)
    result = task.results["cross_validation"]
    curves = torch.tensor(result["unit_curves"])  # [N, S]
    best = result["grid"][int(curves.sum(0).argmax())]
    assert result["chosen_strength"] == [best] * 10
    assert task.pair_strengths().tolist() == pytest.approx([best] * len(task.edge_index[1]))


class PerUnitStrengths(LikelihoodFit):
    """A fit whose units have different penalty strengths from the start."""

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.unit_strength = torch.linspace(1e-3, 1e-2, self.n_neurons)


@pytest.mark.parametrize(("self_filter", "factor"), [(True, 1.0), (0.25, 0.25)])
def test_ridge_on_the_self_filters_with_per_unit_strengths_in_newtons_blocks(
    tmp_path, self_filter, factor
):
    spikes = model().simulate(network(6), 3_000, seed=3, verbose=False)
    task = PerUnitStrengths(
        FilterGLM(window_ms=30, n_basis=4),
        per_neuron=["b", "self_weights"],
        regularizer=L2(1e-3, self_filter=self_filter),
        solver=Newton(),
    )
    data = SpikeTrainDataModule(spikes=spikes, heldout_fraction=0, chunk_bins=1_000)
    assert_newton_blocks_match_autograd(task, data, tmp_path)
    own = task.model.self_weights.detach()
    expected = task.regularizer(task.coupling_weights.detach(), task.pair_strengths())
    expected += (factor * task.unit_strength * own.square().sum(1)).sum()
    assert float(task.penalty()) == pytest.approx(float(expected), rel=1e-6)


def test_a_strong_group_lasso_drops_the_filters_of_uncoupled_units(tmp_path):
    data = SpikeTrainDataModule(spikes=noise(6, 300), heldout_fraction=0)
    lasso = cv_fit(regularizer=GroupLasso(0.1), penalty_grid=None)
    trainer(tmp_path).fit(lasso, data)
    free = cv_fit(regularizer=None, penalty_grid=None)
    trainer(tmp_path / "free").fit(free, data)
    assert lasso.coupling_weights.abs().max() < 1e-3 < free.coupling_weights.abs().max()
