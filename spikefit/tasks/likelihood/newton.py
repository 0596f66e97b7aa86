"""Newton's per-neuron system of a likelihood fit: the linear design of every neuron's block
and the gradient and Hessian assembled from it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from spikefit.checks import InputError
from spikefit.data.spike_trains import Chunk
from spikefit.models.coupling import to_csr
from spikefit.tasks.likelihood.objective import Prepared, link_derivatives
from spikefit.tasks.likelihood.parameters import coupling_columns
from spikefit.tasks.regularizers import Regularizer
from spikefit.tasks.solvers import NewtonSystem

if TYPE_CHECKING:
    from spikefit.tasks.likelihood.task import LikelihoodFit


def newton_system(
    fit: LikelihoodFit,
    batch: list[Chunk],
    prepared: Callable[[int], Prepared],
    scale: torch.Tensor,
    objective: Callable[[], torch.Tensor],
) -> NewtonSystem:
    """The ``objective`` of ``fit``'s training step (the chunks' negative log-likelihood,
    weighted and times ``scale``, plus the penalty) in per-neuron blocks: neuron i's block is
    its incoming coupling weights, its refractory scale and its offsets, in that order
    (:class:`LinearDesign`). ``prepared(k)``: chunk k's traces and sparse targets."""
    strategy = fit.trainer.strategy
    designs: dict[int, LinearDesign] = {}

    def design(k: int) -> LinearDesign:
        if k not in designs:
            bins = batch[k]["bins"]
            presynaptic, own = (None if t is None else t[0, :, -bins:].t() for t in prepared(k)[0])
            designs[k] = LinearDesign(
                presynaptic if fit.fits_coupling else None,
                own if fit.refractory_scale is not None else None,
                fit.offset_signs,
                fit.model.recurrence().detach(),
                fit.solver.max_pairs,
            )
        return designs[k]

    def blocks() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        total, gradient, hessian = 0.0, 0.0, 0.0
        for k, chunk in enumerate(batch):
            traces, targets = prepared(k)
            weight = chunk["weight"] * scale
            with torch.no_grad():
                input = fit.chunk_input(chunk, traces)
            input.requires_grad_()
            link = fit.observation.link(fit.model, input)
            (slope,) = torch.autograd.grad(link.sum(), input, create_graph=True)
            (curvature,) = torch.autograd.grad(slope.sum(), input, materialize_grads=True)
            link, slope = link.detach(), slope.detach()
            first, index, second = link_derivatives(fit.observation, targets, link)
            d = weight * first * slope  # derivatives of the objective in g
            w = weight * first * curvature
            w[index] += weight * second * slope[index].square()
            g, h = design(k).blocks(d, w)
            nll = -weight * fit.observation.log_likelihood_of_link(targets, link)
            total, gradient, hessian = total + nll, gradient + g, hessian + h
        if fit.regularizer is not None and fit.fits_coupling:
            penalty_gradient, penalty_curvature = penalty_derivatives(
                fit.regularizer, fit.coupling_weights
            )
            post, columns = pair_entries(fit)
            gradient[post, columns] += penalty_gradient
            hessian[post, columns, columns] += penalty_curvature
            total = total + fit.penalty().detach()
        free = fit.block_mask()
        gradient = gradient * free
        hessian = torch.where(
            free.unsqueeze(1) & free.unsqueeze(2),
            hessian,
            torch.eye(free.shape[1], device=hessian.device),
        )
        return tuple(strategy.reduce(x, reduce_op="mean") for x in (total, gradient, hessian))

    def to_parameters(step: torch.Tensor) -> list[torch.Tensor]:
        by_parameter, first = {}, 0
        if fit.fits_coupling:
            post, columns = pair_entries(fit)
            by_parameter[fit.coupling_weights] = step[post, columns]
            first = fit.n_basis * fit.n_neurons
        if fit.refractory_scale is not None:
            by_parameter[fit.refractory_scale] = step[:, first]
            first += 1
        for k, name in enumerate(fit.fitted):
            by_parameter[fit.model.get_parameter(name)] = step[:, first + k]
        return [by_parameter[p] for p in fit.trainer.optimizers[0].param_groups[0]["params"]]

    return NewtonSystem(blocks, objective, to_parameters)


def pair_entries(fit: LikelihoodFit) -> tuple[torch.Tensor, torch.Tensor]:
    """Where every fitted coupling weight sits in the blocks: its postsynaptic neuron (the
    block) and its column, [E] (or [E, B] on a basis) each."""
    columns = coupling_columns(fit.edge_index, fit.n_neurons, fit.n_basis)
    post = fit.edge_index[1]
    return (post if columns.dim() == 1 else post.unsqueeze(1).expand_as(columns)), columns


def block_mask(
    edge_index: torch.Tensor | None, n: int, n_basis: int, width: int, device: torch.device
) -> torch.Tensor:
    """[N, P]: which entries of each neuron's block of ``width`` are fitted: all but the
    absent coupling weights (the pairs not in ``edge_index``, e.g. the self-coupling, for
    every one of the ``n_basis`` functions; None: the coupling is not fitted)."""
    free = torch.ones(n, width, dtype=torch.bool, device=device)
    if edge_index is not None:
        coupled = torch.zeros(n, n_basis * n, dtype=torch.bool, device=device)
        columns = coupling_columns(edge_index, n, n_basis)
        post = edge_index[1] if n_basis == 1 else edge_index[1].unsqueeze(1).expand_as(columns)
        coupled[post, columns] = True
        free[:, : n_basis * n] = coupled
    return free


def penalty_derivatives(
    regularizer: Regularizer, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """First and second derivatives of the (separable) penalty in each coupling weight."""
    weights = weights.detach().requires_grad_()
    (first,) = torch.autograd.grad(regularizer(weights), weights, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), weights, materialize_grads=True)
    return first.detach(), second


class LinearDesign:
    r"""How the per-neuron block of fitted parameters moves each neuron's input over one time
    chunk of S bins.

    Neuron i's block is :math:`\beta_i = (W_{0i}, \dots, W_{M-1,i}, s_i, o_{i1}, \dots)`:
    its incoming coupling weights (one per presynaptic trace: M = B·N on a basis of B
    coupling kernels), its refractory scale and its offsets (per-neuron parameters that
    shift the argument of the non-linearity, such as θ or b), and

    .. math::
        g_{ti} = r_i \sum_j F_{tj} W_{ji} + s_i R_{ti} + \sum_k c_k\, o_{ik}
                 + \text{(terms not fitted)}

    with F the presynaptic traces, R the refractory-filtered own spikes and
    :math:`c_k = \pm 1` the sign of offset k. With the elementwise derivatives of the
    objective :math:`d = \partial f / \partial g` and :math:`w = \partial^2 f / \partial g^2`
    (f is a sum over bins and neurons), block i's gradient and Hessian are
    :math:`\sum_t d_{ti} x_{ti}` and :math:`\sum_t w_{ti} x_{ti} x_{ti}^\top` with
    :math:`x_{ti} = (r_i F_t, R_{ti}, c)`.

    The coupling part :math:`\sum_t w_{ti} F_{tj} F_{tk}` uses the sparsity of the traces:
    the products :math:`F_{tj} F_{tk}` of every bin are stored once as a sparse [M², S]
    matrix, so each Hessian costs one sparse product with w.

    Args:
        presynaptic: F [S, M], or None when the coupling is not fitted.
        own: R [S, N], or None when the refractory scale is not fitted.
        signs: :math:`c_k` of the fitted offsets.
        recurrence: :math:`r_i` [N] (or a scalar), the scale of the coupling input.
        max_pairs: largest number of stored products F_tj·F_tk (memory bound).
    """

    def __init__(
        self,
        presynaptic: torch.Tensor | None,
        own: torch.Tensor | None,
        signs: list[float],
        recurrence: torch.Tensor,
        max_pairs: int,
    ) -> None:
        self.own = own
        self.signs = signs
        self.coupled = presynaptic is not None
        if presynaptic is None:
            return
        self.n_traces = presynaptic.shape[1]
        self.recurrence = recurrence
        self.presynaptic_by_neuron = to_csr(presynaptic.t().contiguous())
        self.pairs = pair_products(presynaptic, max_pairs)

    @property
    def width(self) -> int:
        """Block size P per neuron."""
        return (self.n_traces if self.coupled else 0) + (self.own is not None) + len(self.signs)

    def blocks(self, d: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient [N, P] and Hessian [N, P, P] of every neuron's block, from d and w [S, N]."""
        n, width = d.shape[1], self.width
        signs = torch.tensor(self.signs, dtype=d.dtype, device=d.device)
        gradient = d.new_zeros(n, width)
        hessian = d.new_zeros(n, width, width)
        # the per-neuron columns: R (if fitted), then the offsets c_k
        sum_d, sum_w = d.sum(0), w.sum(0)
        local_gradient = [sum_d * sign for sign in signs]
        local_hessian = torch.outer(signs, signs).unsqueeze(-1) * sum_w  # [A, A, N]
        if self.own is not None:
            w_own = w * self.own
            sum_w_own = w_own.sum(0)
            local_gradient.insert(0, (d * self.own).sum(0))
            by_offset = signs.unsqueeze(-1) * sum_w_own  # [offsets, N]
            top = torch.cat([(w_own * self.own).sum(0).unsqueeze(0), by_offset]).unsqueeze(0)
            local_hessian = torch.cat(
                [top, torch.cat([by_offset.unsqueeze(1), local_hessian], dim=1)]
            )
        first = width - len(local_gradient)
        if local_gradient:
            gradient[:, first:] = torch.stack(local_gradient, dim=1)
            hessian[:, first:, first:] = local_hessian.permute(2, 0, 1)
        if self.coupled:
            r, by_neuron, m = self.recurrence.expand(n), self.presynaptic_by_neuron, self.n_traces
            gradient[:, :m] = (by_neuron @ d).t() * r.unsqueeze(1)
            coupling = (self.pairs @ w).view(m, m, n).permute(2, 0, 1)  # [i, j, k]
            hessian[:, :m, :m] = coupling * r.square().view(n, 1, 1)
            # Σ_t F_tj w_ti x_ti for the per-neuron columns x: [i, column, j]
            columns = [(by_neuron @ w_own).t().unsqueeze(1)] if self.own is not None else []
            if self.signs:
                columns.append((by_neuron @ w).t().unsqueeze(1) * signs.view(1, -1, 1))
            if columns:
                cross = torch.cat(columns, dim=1) * r.view(n, 1, 1)
                hessian[:, m:, :m] = cross
                hessian[:, :m, m:] = cross.transpose(1, 2)
        return gradient, hessian


def pair_products(traces: torch.Tensor, max_pairs: int) -> torch.Tensor:
    """Sparse CSR matrix [M², S] whose entry (j·M + k, t) is traces[t, j]·traces[t, k] for
    the M traces [S, M]."""
    n_bins, n = traces.shape
    csr = to_csr(traces)
    rows, columns, values = csr.crow_indices(), csr.col_indices(), csr.values()
    per_bin = rows[1:] - rows[:-1]
    total = int(per_bin.square().sum())
    if total > max_pairs:
        raise InputError(
            "Newton.max_pairs",
            f"the spike traces are too dense for Newton's sparse Hessian "
            f"({total:,} products of trace pairs, more than {max_pairs:,})",
            "solver LBFGS, or a larger max_pairs if memory allows",
        )
    bin_of = torch.repeat_interleave(torch.arange(n_bins, device=traces.device), per_bin)
    partners = per_bin[bin_of]  # for each nonzero, the nonzeros of its bin
    first = torch.repeat_interleave(torch.arange(len(columns), device=traces.device), partners)
    within = torch.arange(total, device=traces.device) - torch.repeat_interleave(
        partners.cumsum(0) - partners, partners
    )
    second = rows[bin_of[first]] + within
    index = torch.stack([columns[first] * n + columns[second], bin_of[first]])
    return to_csr(
        torch.sparse_coo_tensor(
            index, values[first] * values[second], (n * n, n_bins), check_invariants=False
        )
    )
