"""Newton-CG: its preconditioner is the inverse of the matrix it defines, and its fits reach
Newton's optimum, on graph and dense coupling, with a ridge (without one the optimum need not
exist: a refractory neuron that never fires right after its own spikes has its first self
weight's MLE at -∞, where Newton and Newton-CG stop at different points of a flat ray)."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from spikefit.data import SpikeTrainDataModule
from spikefit.models import FilterGLM
from spikefit.tasks import L2, LikelihoodFit, Newton, NewtonCG
from spikefit.tasks.likelihood.newton import GramParts, LinearDesign, gram_preconditioner
from spikefit.tasks.likelihood.objective import StepCache
from tests import QUIET
from tests.test_filter_glm import model, network


def test_the_preconditioner_inverts_the_gram_approximation_on_the_fitted_entries():
    generator = torch.Generator().manual_seed(0)
    bins, n, n_basis, local = 400, 4, 2, 3
    m = n * n_basis
    traces = torch.rand(bins, m, generator=generator, dtype=torch.float64)
    traces *= torch.rand(bins, m, generator=generator) < 0.5
    columns = torch.rand(bins, n, local, generator=generator, dtype=torch.float64)
    w = torch.rand(bins, n, generator=generator, dtype=torch.float64)
    mass = traces.square().sum(1)
    cross = torch.einsum("tia,tj->iaj", columns, traces)
    local_block = torch.einsum("ti,tia,tib->iab", w, columns, columns)
    r = torch.tensor([1.0, 0.5, 2.0, 1.5], dtype=torch.float64)
    parts = GramParts(
        traces.t() @ traces, mass @ w * r**2, mass @ w * r, mass.sum(), cross, local_block
    )
    free = torch.ones(n, m + local, dtype=torch.bool)
    for i in range(n):  # each block leaves out its self-coupling
        free[i, i * n_basis : (i + 1) * n_basis] = False
    free[0, m + 2] = False  # and one local term
    penalty = torch.zeros(n, m + local, dtype=torch.float64)
    penalty[:, :m] = 0.3 * free[:, :m]
    penalty[:, m + 1 :] = 0.2
    x = torch.randn(n, m + local, generator=generator, dtype=torch.float64) * free
    solved = gram_preconditioner(parts, penalty, free)(x)
    for i in range(n):  # written out: c_i r_i² G + μ I, c_i r_i Σ_t L F, the local block
        scale = float((mass @ w)[i] / mass.sum())
        matrix = torch.zeros(m + local, m + local, dtype=torch.float64)
        matrix[:m, :m] = scale * r[i] ** 2 * parts.gram + 0.3 * torch.eye(m)
        matrix[m:, :m] = scale * r[i] * cross[i]
        matrix[:m, m:] = matrix[m:, :m].t()
        matrix[m:, m:] = local_block[i] + torch.diag(penalty[i, m:])
        kept = free[i]
        expected = torch.zeros(m + local, dtype=torch.float64)
        expected[kept] = torch.linalg.solve(matrix[kept][:, kept], x[i, kept])
        assert torch.allclose(solved[i], expected, atol=1e-12, rtol=1e-9)


def test_the_product_of_some_blocks_is_theirs_of_the_written_out_hessian():
    generator = torch.Generator().manual_seed(1)
    bins, n, n_basis, local = 300, 5, 2, 2
    m = n * n_basis
    traces = torch.rand(bins, m, generator=generator, dtype=torch.float64)
    columns = torch.rand(bins, n, local, generator=generator, dtype=torch.float64)
    w = torch.rand(bins, n, generator=generator, dtype=torch.float64)
    r = torch.tensor([1.0, 0.5, 2.0, 1.5, 0.7], dtype=torch.float64)
    design = LinearDesign(traces, columns, r, 10**6, approximate=True)
    rows = torch.tensor([1, 3])
    direction = torch.randn(n, m + local, generator=generator, dtype=torch.float64)
    direction[[0, 2, 4]] = 0
    product = design.product(w, direction, rows)
    for i in range(n):  # Σ_t w_ti x_ti x_tiᵀ with x_ti = (r_i F_t, L_ti)
        x = torch.cat([r[i] * traces, columns[:, i]], dim=1)
        expected = (x.t() * w[:, i]) @ x @ direction[i] * (i in rows)
        assert torch.allclose(product[i], expected, atol=1e-12, rtol=1e-10)


def fitted(tmp_path, solver, coupling: str, ridge: float, **options) -> LikelihoodFit:
    data = network(8)
    spikes = model().simulate(data, 20_000, seed=3, verbose=False)
    task = LikelihoodFit(
        FilterGLM(window_ms=30, n_basis=4),
        per_neuron=["b", "self_weights"],
        coupling=coupling,
        solver=solver,
        regularizer=L2(ridge, self_filter=True) if ridge else None,
        check_steps=0,
        **options,
    )
    module = SpikeTrainDataModule(
        spikes=spikes, network=data, heldout_fraction=0.2, chunk_bins=4_000
    )
    L.Trainer(max_epochs=20, default_root_dir=tmp_path, **QUIET).fit(task, module)
    assert task.converged
    return task


@pytest.mark.parametrize(("coupling", "ridge"), [("dense", 1e-4), ("graph", 1e-3)])
def test_newton_cg_reaches_newtons_optimum(tmp_path, coupling, ridge):
    exact = fitted(tmp_path / "newton", Newton(), coupling, ridge)
    truncated = fitted(tmp_path / "cg", NewtonCG(tolerance=1e-10), coupling, ridge)
    assert torch.allclose(truncated.coupling_weights, exact.coupling_weights, atol=5e-3)
    for name in ("b", "self_weights"):
        assert torch.allclose(
            truncated.model.get_parameter(name), exact.model.get_parameter(name), atol=5e-3
        )
    for split in ("train", "heldout"):
        scores = [task.summary()["bits_per_spike"][split] for task in (exact, truncated)]
        assert scores[1] == pytest.approx(scores[0], abs=1e-4)


def test_a_fit_that_keeps_only_some_chunks_reaches_the_fit_that_keeps_all(tmp_path, monkeypatch):
    kept = []
    keep = StepCache.keep

    def counted(cache, store, k, value, tensors):
        keep(cache, store, k, value, tensors)
        kept.append(cache.kept_bytes)

    monkeypatch.setattr(StepCache, "keep", counted)
    solver = NewtonCG(tolerance=1e-10)
    every = fitted(tmp_path / "all", solver, "dense", 1e-4, compute_uncertainty=False)
    whole = max(kept)
    kept.clear()
    budget = whole / 3 / 2**30  # a third of it: the later chunks are computed at every use
    bounded = fitted(tmp_path / "some", solver, "dense", 1e-4, cache_gib=budget)
    assert 0 < max(kept) <= whole / 3
    assert torch.allclose(bounded.coupling_weights, every.coupling_weights, atol=1e-5)
    assert every.standard_errors is None and bounded.standard_errors is not None


def test_newton_cg_refuses_lasso_as_newton_does():
    from spikefit.checks import InputError
    from spikefit.tasks import L1

    with pytest.raises(InputError, match=r"^LikelihoodFit.regularizer: solver NewtonCG"):
        task = LikelihoodFit(FilterGLM(), regularizer=L1(0.1), solver=NewtonCG())
        task.regularizer.check_solver(task.solver, "LikelihoodFit.regularizer")
