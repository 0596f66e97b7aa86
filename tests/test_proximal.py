"""The proximal gradient solver: the penalties' proximal operators against hand values, and
fits with the exact lasso and group lasso that meet the optimality conditions of their
non-smooth objectives, with weights and whole filters at exactly 0."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from spikefit.data import SpikeTrainDataModule
from spikefit.models import FilterGLM
from spikefit.tasks import L1, GroupLasso, LikelihoodFit, ProximalGradient
from tests import QUIET
from tests.test_filter_glm import model, network


def test_soft_thresholding_by_weight_and_by_filter():
    weights = torch.tensor([[3.0, -0.5, 1.0], [0.3, 0.4, 0.0]])
    threshold = torch.tensor([1.0, 0.25])
    assert torch.allclose(
        L1(1.0).prox(weights, threshold), torch.tensor([[2.0, 0.0, 0.0], [0.05, 0.15, 0.0]])
    )
    # norms 3.2016 and 0.5: shrunk by 1 (factor 1 - 1/3.2016) and by 0.25 (factor 1/2)
    shrunk = GroupLasso(1.0, smoothing=0).prox(weights, threshold)
    assert torch.allclose(shrunk[0], weights[0] * (1 - 1 / weights[0].norm()))
    assert torch.allclose(shrunk[1], torch.tensor([0.15, 0.2, 0.0]))
    assert torch.equal(GroupLasso(1.0, 0).prox(weights, torch.tensor([4.0, 1.0])), weights * 0)


def fitted(tmp_path, regularizer) -> tuple[LikelihoodFit, list]:
    data = network(6)
    spikes = model().simulate(data, 10_000, seed=3, verbose=False)
    task = LikelihoodFit(
        FilterGLM(window_ms=30, n_basis=4, b=-3.5),
        per_neuron=["b", "self_weights"],
        coupling="dense",
        solver=ProximalGradient(max_iter=2000, tolerance=2e-6),
        regularizer=regularizer,
        check_steps=0,
        compute_uncertainty=False,
    )
    module = SpikeTrainDataModule(spikes=spikes, heldout_fraction=0.2)
    L.Trainer(max_epochs=5, default_root_dir=tmp_path, **QUIET).fit(task, module)
    assert task.converged
    chunks = [chunk for batch in module.train_dataloader() for chunk in batch]
    return task, chunks


def smooth_gradients(task: LikelihoodFit, chunks: list) -> tuple[torch.Tensor, list]:
    """The gradient of the mean negative log-likelihood per neuron-bin in the coupling weights,
    and those in the other fitted parameters."""
    with torch.enable_grad():
        nll = -sum(task.chunk_log_likelihood(c) * c["weight"] for c in chunks)
        nll = nll / task.neuron_bins(chunks)
        others = [p for p in task.parameters() if p.requires_grad]
        others = [p for p in others if p is not task.coupling_weights]
        coupling, *rest = torch.autograd.grad(nll, [task.coupling_weights, *others])
        return coupling, rest


def test_the_group_lasso_fit_meets_its_optimality_conditions(tmp_path):
    strength = 2e-4
    task, chunks = fitted(tmp_path, GroupLasso(strength, smoothing=0))
    weights = task.coupling_weights.detach().view(-1, 4)
    coupling, others = smooth_gradients(task, chunks)
    norms, coupling = weights.norm(dim=1), coupling.view(-1, 4)
    zero = norms == 0
    assert 0 < int(zero.sum()) < len(weights)  # whole filters at exactly 0, not all of them
    # at 0: the gradient's norm within λ; elsewhere: the gradient balances λ w/‖w‖
    assert float(coupling[zero].norm(dim=1).max()) <= strength * 1.02
    balance = coupling[~zero] + strength * weights[~zero] / norms[~zero].unsqueeze(1)
    assert float(balance.norm(dim=1).max()) <= 0.05 * strength
    assert all(float(gradient.abs().max()) <= 0.05 * strength for gradient in others)


def test_the_lasso_fit_meets_its_optimality_conditions(tmp_path):
    strength = 1e-4
    task, chunks = fitted(tmp_path, L1(strength))
    weights = task.coupling_weights.detach().flatten()
    coupling, others = smooth_gradients(task, chunks)
    coupling, zero = coupling.flatten(), weights == 0
    assert 0 < int(zero.sum()) < len(weights)
    assert float(coupling[zero].abs().max()) <= strength * 1.02
    balance = coupling[~zero] + strength * weights[~zero].sign()
    assert float(balance.abs().max()) <= 0.05 * strength
    assert all(float(gradient.abs().max()) <= 0.05 * strength for gradient in others)


def test_ridge_and_smoothed_group_lasso_are_smooth_for_the_proximal_solver():
    assert GroupLasso(1.0).smooth and not GroupLasso(1.0, smoothing=0).smooth
    assert not L1(1.0).smooth
    with pytest.raises(Exception, match="smoothing"):
        GroupLasso(1.0, smoothing=-1)
