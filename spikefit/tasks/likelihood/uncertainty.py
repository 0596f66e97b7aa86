r"""Which fitted connections are real: the observed Fisher information of every neuron's block
at the optimum, the standard errors it gives, a Wald test of every pair's coupling weights,
Benjamini–Hochberg q-values and the calls by the sign of the summed coupling filter."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from spikefit.data.spike_trains import Chunk
from spikefit.tasks.likelihood.newton import chunk_blocks, chunk_design, reduced_blocks
from spikefit.tasks.likelihood.objective import StepCache
from spikefit.tasks.likelihood.parameters import coupling_columns, filter_areas
from spikefit.tasks.solvers import MAX_PAIRS

if TYPE_CHECKING:
    from spikefit.tasks.likelihood.task import LikelihoodFit

#: Elements of the float64 covariance blocks inverted at once (a group of neurons).
GROUP_ELEMENTS = 2**24
#: The calls by their sign: +1 excitatory, -1 inhibitory, 0 none.
CALL_NAMES = {1: "excitatory", -1: "inhibitory", 0: "none"}


def information(fit: LikelihoodFit, batches: list[list[Chunk]]) -> torch.Tensor:
    r"""The observed Fisher information [N, P, P] of every neuron's block at the fit's
    parameters: the Hessian :math:`\sum_t w_{ti} x_{ti} x_{ti}^\top` of the total weighted
    negative log-likelihood (nats) of the ``batches``' chunks of all processes
    (:class:`~spikefit.tasks.likelihood.newton.LinearDesign`), one chunk at a time, with
    dense products where the traces are too dense for sparse ones; plus the penalty's
    curvature times the weighted neuron-bins (its weight in the total, as the objective is
    the mean per neuron-bin plus the penalty), so that the standard errors are those of the
    penalized estimate. Entries not fitted hold the identity."""
    max_pairs = getattr(fit.solver, "max_pairs", MAX_PAIRS)
    total, gradient, hessian = 0.0, 0.0, 0.0
    bar = fit.progress(sum(len(batch) for batch in batches), "standard errors")
    for batch in batches:
        for chunk in fit.transfer_batch_to_device(batch, fit.device, 0):
            with torch.no_grad():  # the traces at the fitted parameters
                prepared = StepCache(fit.model, [chunk])(0)
            design = chunk_design(fit, chunk, prepared[0], max_pairs, dense_beyond=True)
            nll, g, h = chunk_blocks(fit, chunk, prepared, chunk["weight"], design)
            total, gradient, hessian = total + nll, gradient + g, hessian + h
            bar.update()
    bar.close()
    size = fit.neuron_bins([chunk for batch in batches for chunk in batch])
    return reduced_blocks(fit, total, gradient, hessian, "sum", size)[2]


def block_covariance(information: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
    """The inverse [N, P, P] (float64) of every block of ``information`` [N, P, P] on its
    fitted entries ``free`` [N, P], by a Cholesky factorisation scaled to a unit diagonal.
    NaN for the entries not fitted or without information (a zero diagonal, e.g. the weights
    from a neuron silent in the training bins), and for all of a block that is not positive
    definite (singular)."""
    hessian = information.double()
    diagonal = hessian.diagonal(dim1=-2, dim2=-1)
    free = free & (diagonal != 0)
    unit = torch.where(free, diagonal.abs(), 1.0).rsqrt()
    scale = unit.unsqueeze(-1) * unit.unsqueeze(-2)
    both = free.unsqueeze(-1) & free.unsqueeze(-2)
    eye = torch.eye(hessian.shape[-1], dtype=hessian.dtype, device=hessian.device)
    factor, info = torch.linalg.cholesky_ex(torch.where(both, hessian * scale, eye))
    definite = (info == 0).view(-1, 1, 1)
    covariance = torch.cholesky_inverse(torch.where(definite, factor, eye)) * scale
    return covariance.masked_fill(~(both & definite), math.nan)


def uncertainty(
    fit: LikelihoodFit, batches: list[list[Chunk]]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""At the fit's parameters, from the :func:`information` of the training ``batches``:
    the standard errors :math:`\sqrt{(I_i^{-1})_{aa}}` [N, P] (float64) of every block's
    entries (NaN where :func:`block_covariance` has none) and the covariance [E, K, K] of
    every fitted pair's K coupling weights (None without fitted coupling). The blocks are
    inverted a group of neurons at a time."""
    blocks, free = information(fit, batches), fit.block_mask()
    n, width = free.shape
    edges = fit.edge_index if fit.fits_coupling else fit.edge_index[:, :0]
    post, k = edges[1], fit.n_basis
    columns = coupling_columns(edges, n, k).reshape(len(post), k)
    errors = torch.empty(free.shape, dtype=torch.float64, device=free.device)
    pairs = torch.empty(len(post), k, k, dtype=torch.float64, device=free.device)
    for rows in torch.arange(n, device=free.device).split(max(1, GROUP_ELEMENTS // width**2)):
        covariance = block_covariance(blocks[rows], free[rows])
        errors[rows] = covariance.diagonal(dim1=-2, dim2=-1).sqrt()
        within = (post >= rows[0]) & (post <= rows[-1])
        at = columns[within]
        pairs[within] = covariance[
            (post[within] - rows[0]).view(-1, 1, 1), at.unsqueeze(2), at.unsqueeze(1)
        ]
    return errors, (pairs if fit.fits_coupling else None)


def wald_statistics(estimates: torch.Tensor, covariance: torch.Tensor) -> torch.Tensor:
    r"""The Wald statistic :math:`w^\top \Sigma^{-1} w` [E] of every estimate [E, K] against 0,
    with its covariance Σ [E, K, K] (the squared norm of :math:`L^{-1} w`, Σ = L Lᵀ); NaN
    where Σ is unknown (NaN) or not positive definite."""
    known = ~covariance.isnan().flatten(1).any(1)
    eye = torch.eye(covariance.shape[-1], dtype=covariance.dtype, device=covariance.device)
    factor, info = torch.linalg.cholesky_ex(torch.where(known.view(-1, 1, 1), covariance, eye))
    whitened = torch.linalg.solve_triangular(factor, estimates.unsqueeze(-1), upper=False)
    statistic = whitened.square().sum((-2, -1))
    return statistic.masked_fill(~known | (info != 0), math.nan)


def chi_square_survival(statistic: torch.Tensor, dof: int) -> torch.Tensor:
    r"""The p-value :math:`P(\chi^2_{dof} > x) = Q(dof/2, x/2)` of every statistic x, Q the
    regularized upper incomplete gamma function (NaN stays NaN)."""
    return torch.special.gammaincc(torch.full_like(statistic, dof / 2), statistic / 2)


def benjamini_hochberg(p: torch.Tensor) -> torch.Tensor:
    r"""Benjamini–Hochberg q-values (adjusted p-values) [E] of the p-values [E]: with the m
    finite ones sorted, :math:`p_{(1)} \le \dots \le p_{(m)}`,
    :math:`q_{(k)} = \min_{j \ge k} \min(1, m\, p_{(j)} / j)`, monotone in p; NaN stays NaN.
    Calling the pairs with q ≤ α keeps the false discovery rate at most α (independent or
    positively dependent tests)."""
    finite = ~p.isnan()
    ranked, order = torch.where(finite, p, math.inf).sort()
    rank = torch.arange(1, len(p) + 1, dtype=p.dtype, device=p.device)
    adjusted = (ranked * int(finite.sum()) / rank).flip(0).cummin(0).values.flip(0).clamp(max=1)
    return torch.empty_like(p).scatter(0, order, adjusted).masked_fill(~finite, math.nan)


@dataclass
class Connections:
    """Every fitted pair's Wald test and call (tensors [E] on the CPU).

    Attributes:
        edge_index: [2, E] the pairs' presynaptic and postsynaptic neurons.
        summed_weight: the integral of the pair's coupling filter over lags, times r,
            :math:`r_i \\sum_b w_{jib} \\sum_\\tau B_b(\\tau)` (input units × bins).
        statistic: the Wald statistic of the pair's K weights against 0.
        p: its p-value under :math:`\\chi^2_K`.
        q: its Benjamini–Hochberg q-value over all pairs.
        call: +1 excitatory, -1 inhibitory (the sign of ``summed_weight``) where q ≤
            ``fdr``, else 0 (none).
        fdr: the false discovery rate of the calls.
    """

    edge_index: torch.Tensor
    summed_weight: torch.Tensor
    statistic: torch.Tensor
    p: torch.Tensor
    q: torch.Tensor
    call: torch.Tensor
    fdr: float

    def counts(self) -> dict[str, int]:
        """The number of pairs of every call."""
        return {name: int((self.call == sign).sum()) for sign, name in CALL_NAMES.items()}

    def table(self) -> dict[str, list]:
        """The columns of ``connections.csv``, one row per pair."""
        pre, post = self.edge_index.tolist()
        return {
            "pre": pre,
            "post": post,
            "summed_weight": self.summed_weight.tolist(),
            "statistic": self.statistic.tolist(),
            "p": self.p.tolist(),
            "q": self.q.tolist(),
            "call": [CALL_NAMES[sign] for sign in self.call.tolist()],
        }

    def matrix(self, n: int) -> torch.Tensor:
        """The calls as a dense [N, N] matrix indexed [pre, post]: ±1, 0 for none, NaN for
        the pairs not fitted (the diagonal)."""
        called = torch.full((n, n), math.nan)
        called[self.edge_index[0], self.edge_index[1]] = self.call.float()
        return called


def connections(fit: LikelihoodFit, covariance: torch.Tensor) -> Connections:
    """The :class:`Connections` of the fit's pairs at FDR ``fit.hparams.fdr``, from the
    covariance [E, K, K] of their coupling weights (:func:`uncertainty`)."""
    weights = fit.coupling_weights.detach().double().reshape(len(covariance), fit.n_basis)
    statistic = wald_statistics(weights, covariance)
    p = chi_square_survival(statistic, fit.n_basis)
    q = benjamini_hochberg(p)
    r = fit.model.recurrence().detach().double().expand(fit.n_neurons)[fit.edge_index[1]]
    summed = r * filter_areas(weights, fit.model.coupling_basis().detach())
    call = torch.where(q <= fit.hparams.fdr, summed.sign(), 0).long()
    values = (fit.edge_index, summed, statistic, p, q, call)
    return Connections(*(value.cpu() for value in values), float(fit.hparams.fdr))
