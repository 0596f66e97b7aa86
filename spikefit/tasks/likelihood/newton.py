"""Newton's per-neuron system of a likelihood fit: the linear design of every neuron's block
and the gradient and Hessian assembled from it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch

from spikefit.checks import InputError
from spikefit.data.spike_trains import Chunk
from spikefit.models.coupling import to_csr
from spikefit.tasks.likelihood.objective import Prepared, StepCache, link_derivatives
from spikefit.tasks.likelihood.parameters import coupling_columns, design_columns
from spikefit.tasks.regularizers import Regularizer
from spikefit.tasks.solvers import Curvature, NewtonSystem, block_solver

if TYPE_CHECKING:
    from spikefit.tasks.likelihood.task import LikelihoodFit

#: Dense products of the traces are faster than sparse ones where more than 1 in this many
#: are nonzero.
SPARSE_SHARE = 16


def newton_system(
    fit: LikelihoodFit,
    batch: list[Chunk],
    prepared: Callable[[int], Prepared],
    scale: torch.Tensor,
    objective: Callable[[], torch.Tensor],
    cache: StepCache | None = None,
) -> NewtonSystem:
    """The ``objective`` of ``fit``'s training step (the chunks' negative log-likelihood,
    weighted and times ``scale``, plus the penalty) in per-neuron blocks: neuron i's block is
    its incoming coupling weights, then the columns of its local terms in order
    (:class:`LinearDesign`). ``prepared(k)``: chunk k's traces and sparse targets;
    ``cache``: where the chunks' designs and their constant sums are kept for later steps
    on the same chunks (within its budget)."""
    cache = StepCache(fit.model, batch, budget=0) if cache is None else cache
    approximate = fit.solver.approximate_hessian

    def design(k: int, known: Prepared | None = None) -> LinearDesign:
        """Chunk k's design, from its traces and targets ``known`` where the caller has them
        (a chunk beyond the cache's budget is not prepared twice)."""
        if k in cache.designs:
            return cache.designs[k]
        traces = (prepared(k) if known is None else known)[0]
        made = chunk_design(fit, batch[k], traces, fit.solver.max_pairs, approximate=approximate)
        cache.keep(cache.designs, k, made, made.stored(with_traces=k not in cache.prepared))
        return made

    def blocks() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        total, gradient, hessian = 0.0, 0.0, 0.0
        for k, chunk in enumerate(batch):
            known = prepared(k)
            nll, g, h = chunk_blocks(fit, chunk, known, chunk["weight"] * scale, design(k, known))
            total, gradient, hessian = total + nll, gradient + g, hessian + h
        return reduced_blocks(fit, total, gradient, hessian, "mean", 1.0)[:3]

    def to_parameters(step: torch.Tensor) -> list[torch.Tensor]:
        by_parameter, first = {}, 0
        if fit.fits_coupling:
            post, columns = pair_entries(fit)
            by_parameter[fit.coupling_weights] = step[post, columns]
            first = fit.n_basis * fit.n_neurons
        for term in fit.local_terms:
            by_parameter[term.parameter] = step[:, first : first + term.width].view_as(
                term.parameter
            )
            first += term.width
        return [by_parameter[p] for p in fit.trainer.optimizers[0].param_groups[0]["params"]]

    def curvature() -> Curvature:
        return system_curvature(fit, batch, prepared, scale, design, cache.spectrum)

    return NewtonSystem(blocks, objective, to_parameters, curvature)


def system_curvature(
    fit: LikelihoodFit,
    batch: list[Chunk],
    prepared: Callable[[int], Prepared],
    scale: torch.Tensor,
    design: Callable[[int, Prepared | None], LinearDesign],
    spectrum: dict[str, tuple[torch.Tensor, torch.Tensor]],
) -> Curvature:
    """Newton-CG's :data:`~spikefit.tasks.solvers.Curvature` of the objective of
    :func:`newton_system`: the exact product of the Hessian blocks with a direction over
    every chunk and :func:`gram_preconditioner`, both reduced over processes; ``spectrum``
    keeps the sums that are the same in every iteration (the traces' Gram matrix, with its
    eigendecomposition, and :meth:`LinearDesign.constant_parts`)."""
    total, gradient, weighted, sums, weights = 0.0, 0.0, None, None, []
    constants = spectrum.get("constants")
    strategy = fit.trainer.strategy
    for k, chunk in enumerate(batch):
        known = prepared(k)
        nll, d, w = chunk_derivatives(fit, chunk, known, chunk["weight"] * scale)
        linear = design(k, known)
        weighted = summed(weighted, linear.weighted_parts(w))
        if constants is None:
            sums = summed(sums, linear.constant_parts())
        total, gradient = total + nll, gradient + linear.gradient(d)
        weights.append(w)
    if constants is None:
        constants = spectrum["constants"] = [strategy.reduce(x, reduce_op="mean") for x in sums]
        if constants[0].dim() == 2:
            spectrum["gram"] = torch.linalg.eigh(constants[0].double())
    gram, mass, cross = constants
    coupling_mass, cross_mass, local = (strategy.reduce(x, reduce_op="mean") for x in weighted)
    parts = GramParts(gram, coupling_mass, cross_mass, mass, cross, local)
    total, gradient, _, penalty = reduced_blocks(fit, total, gradient, None, "mean", 1.0)
    free = fit.block_mask()

    def product(direction: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        data = sum(design(k, None).product(w, direction, rows) for k, w in enumerate(weights))
        data = strategy.reduce(data, reduce_op="mean")
        return torch.where(free, data + penalty * direction, direction)

    return total, gradient, gram_preconditioner(parts, penalty, free, spectrum.get("gram")), product


def summed(total: list[torch.Tensor] | None, parts: list[torch.Tensor]) -> list[torch.Tensor]:
    """``parts`` added to ``total`` term by term (``parts`` where there is no total yet)."""
    return parts if total is None else [x + y for x, y in zip(total, parts, strict=True)]


def positive_part(schur: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """The Schur complements [N, A, A] with their eigenvalues raised to at least 1/100 of
    the least eigenvalue of the ``local`` blocks (the exact cross terms with the Gram
    approximation need not be positive definite; this keeps the preconditioner so)."""
    values, vectors = torch.linalg.eigh(schur)
    local_values = torch.linalg.eigvalsh(local)
    floor = torch.maximum(0.01 * local_values[:, :1], 1e-12 * local_values[:, -1:])
    raised = values.maximum(floor.clamp(min=1e-300)).unsqueeze(1)
    return (vectors * raised) @ vectors.transpose(1, 2)


class GramParts(NamedTuple):
    """Sums over bins for :func:`gram_preconditioner`
    (:meth:`LinearDesign.preconditioner_parts`)."""

    gram: torch.Tensor  # Σ_t F_t F_tᵀ [M, M]
    coupling_mass: torch.Tensor  # Σ_t w_ti r_i² ‖F_t‖² [N]
    cross_mass: torch.Tensor  # Σ_t w_ti r_i ‖F_t‖² [N]
    mass: torch.Tensor  # Σ_t ‖F_t‖²
    cross: torch.Tensor  # Σ_t L_tia F_t [N, A, M]
    local: torch.Tensor  # Σ_t w_ti L_tia L_tib [N, A, A]


def gram_preconditioner(
    parts: GramParts,
    penalty: torch.Tensor,
    free: torch.Tensor,
    spectrum: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    r"""Newton-CG's preconditioner, :math:`x \mapsto M_i^{-1} x_i` for every block [N, P]
    (float64): the inverse of the Hessian block with its coupling part
    :math:`\sum_t w_{ti} r_i^2 F_t F_t^\top` replaced by :math:`c_i r_i^2 G + \mu_i I` and
    its cross terms :math:`\sum_t w_{ti} r_i L_{tia} F_t` by :math:`c_i r_i \sum_t L_{tia}
    F_t`, G the traces' Gram matrix, :math:`c_i` the mean of :math:`w_{ti}` weighted by
    :math:`\lVert F_t \rVert^2` and :math:`\mu_i` the penalty's curvature, on the fitted
    entries (``free`` [N, P]; identity elsewhere; ``penalty`` [N, P] the penalty's curvature).
    One eigendecomposition of G serves every neuron; the entries each block leaves out
    (e.g. the self-coupling) are removed exactly by a correction of their size, and the
    local terms enter through their Schur complement. ``spectrum``: G's eigenvalues and
    eigenvectors (float64), if known."""
    n, width = free.shape
    m = parts.cross.shape[2]
    local_free = free[:, m:]
    eye = torch.eye(width - m, dtype=torch.float64, device=free.device)
    local = parts.local.double() + torch.diag_embed(penalty[:, m:].double())
    local = torch.where(local_free.unsqueeze(1) & local_free.unsqueeze(2), local, eye)
    if not m:
        solve = block_solver(local)
        return lambda x: torch.where(free, solve(x), x)
    coupled = free[:, :m]
    values, vectors = spectrum if spectrum is not None else torch.linalg.eigh(parts.gram.double())
    mass = parts.mass.double().clamp(min=1e-300)
    scale = parts.coupling_mass.double() / mass
    ridge = torch.where(coupled, penalty[:, :m].double(), 0.0).amax(1)
    denominator = scale.unsqueeze(1) * values.clamp(min=0) + ridge.unsqueeze(1)
    floor = 1e-12 * denominator.amax(1, keepdim=True).clamp(min=1e-300)
    inverse = 1.0 / denominator.clamp(min=floor)  # [N, M]

    # the left-out coupling entries R_i of every block, padded to the most of any block
    left_out = (~coupled).sum(1)
    order = coupled.to(torch.int8).argsort(dim=1, stable=True)[:, : int(left_out.max())]
    valid = torch.arange(order.shape[1], device=free.device) < left_out.unsqueeze(1)
    rows = ((vectors[order] * inverse.unsqueeze(1)) @ vectors.t()) * valid.unsqueeze(2)
    at_left_out = rows.gather(2, order.unsqueeze(1).expand(-1, order.shape[1], -1))
    pair_valid = valid.unsqueeze(1) & valid.unsqueeze(2)
    solve_left_out = block_solver(
        torch.where(pair_valid, at_left_out, torch.eye(order.shape[1], dtype=torch.float64))
    )

    def coupling_solve(x: torch.Tensor) -> torch.Tensor:
        r""":math:`(c_i G + \mu_i I)^{-1}` on block i's fitted coupling entries, for the
        rows of x [N, Q, M]."""
        solved = ((x @ vectors) * inverse.unsqueeze(1)) @ vectors.t()
        if not order.shape[1]:
            return solved
        index = order.unsqueeze(1).expand(-1, x.shape[1], -1)
        correction = solve_left_out(solved.gather(2, index).transpose(1, 2)).transpose(1, 2)
        return solved - correction @ rows

    cross = parts.cross.double() * (parts.cross_mass.double() / mass).view(n, 1, 1)
    cross = cross * coupled.unsqueeze(1) * local_free.unsqueeze(2)
    through = coupling_solve(cross)  # [N, A, M]
    solve_local = block_solver(positive_part(local - cross @ through.transpose(1, 2), local))

    def precondition(x: torch.Tensor) -> torch.Tensor:
        moved = coupling_solve((x[:, :m] * coupled).unsqueeze(1)).squeeze(1)
        own = solve_local(x[:, m:] - (cross @ moved.unsqueeze(-1)).squeeze(-1))
        moved = moved - (own.unsqueeze(1) @ through).squeeze(1)
        return torch.where(free, torch.cat([moved, own], 1), x)

    return precondition


def chunk_design(
    fit: LikelihoodFit,
    chunk: Chunk,
    traces: tuple,
    max_pairs: int,
    dense_beyond: bool = False,
    approximate: bool = False,
) -> LinearDesign:
    """The :class:`LinearDesign` of ``chunk`` from its spike ``traces`` (time-major, as
    :class:`~spikefit.tasks.likelihood.objective.StepCache` keeps them)."""
    presynaptic = traces[0][0, :, -chunk["bins"] :].t() if fit.fits_coupling else None
    return LinearDesign(
        presynaptic,
        local_columns(fit, chunk, traces),
        fit.model.recurrence().detach(),
        max_pairs,
        dense_beyond,
        approximate,
    )


def chunk_blocks(
    fit: LikelihoodFit,
    chunk: Chunk,
    prepared: Prepared,
    weight: torch.Tensor | float,
    design: LinearDesign,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The chunk's negative log-likelihood times ``weight`` with its gradient [N, P] and
    Hessian [N, P, P] in every neuron's block (:func:`chunk_derivatives`)."""
    nll, d, w = chunk_derivatives(fit, chunk, prepared, weight)
    gradient, hessian = design.blocks(d, w)
    return nll, gradient, hessian


def chunk_derivatives(
    fit: LikelihoodFit, chunk: Chunk, prepared: Prepared, weight: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The chunk's negative log-likelihood times ``weight`` and its first and second
    derivatives d, w [S, N] in every bin's input, from the link's derivatives in the input
    (autograd) and in the likelihood parameter (:func:`link_derivatives`)."""
    traces, targets = prepared
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
    nll = -weight * fit.observation.log_likelihood_of_link(targets, link)
    return nll, d, w


def reduced_blocks(
    fit: LikelihoodFit,
    total: torch.Tensor,
    gradient: torch.Tensor,
    hessian: torch.Tensor | None,
    reduce_op: str,
    penalty_weight: torch.Tensor | float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The blocks of the processes' chunks reduced over processes (``"sum"``, or ``"mean"``
    of sums already divided by the world size), plus the penalty on the coupling times
    ``penalty_weight``, with its derivatives; entries not fitted: gradient 0, Hessian
    identity. Also returns the penalty's curvature [N, P] (it is separable: the Hessian's
    diagonal); without ``hessian`` (Newton-CG's products) no Hessian."""
    strategy = fit.trainer.strategy
    total, gradient = (strategy.reduce(x, reduce_op=reduce_op) for x in (total, gradient))
    curvature = torch.zeros_like(gradient)
    if fit.regularizer is not None:
        for weights, strength, rows, columns in penalized_entries(fit):
            first, second = penalty_derivatives(fit.regularizer, weights, strength)
            gradient[rows, columns] += penalty_weight * first
            curvature[rows, columns] += penalty_weight * second
        total = total + penalty_weight * torch.as_tensor(fit.penalty()).detach()
    free = fit.block_mask()
    gradient = gradient * free
    if hessian is None:
        return total, gradient, None, curvature
    hessian = strategy.reduce(hessian, reduce_op=reduce_op)
    if fit.regularizer is not None:
        hessian = hessian + torch.diag_embed(curvature)
    hessian = torch.where(
        free.unsqueeze(1) & free.unsqueeze(2),
        hessian,
        torch.eye(free.shape[1], device=hessian.device),
    )
    return total, gradient, hessian, curvature


def local_columns(fit: LikelihoodFit, chunk: Chunk, traces: tuple | None) -> torch.Tensor | None:
    """The design columns [S, N, A] of the fit's local terms on ``chunk``: autograd's for the
    terms of the input, ±1 for the offsets (None without local terms)."""
    terms = fit.local_terms
    if not terms:
        return None
    inputs = [term.parameter for term in terms if term.sign is None]
    computed = iter(
        design_columns(lambda c: fit.chunk_input(c, traces), chunk, inputs).unbind(-1)
        if inputs
        else ()
    )
    shape = (chunk["bins"], fit.n_neurons)
    columns = []
    for term in terms:
        if term.sign is None:
            columns.extend(next(computed) for _ in range(term.width))
        else:
            columns.append(torch.full(shape, term.sign, device=fit.device))
    return torch.stack(columns, dim=-1)


def penalized_entries(
    fit: LikelihoodFit,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The penalized weights in the blocks, each as (weights, strength per row, block rows,
    block columns): the fitted coupling (:func:`pair_entries`, the pairs' strengths) and the
    penalized self-filter weights [N, A] where they are a local term (their units')."""
    entries = []
    if fit.fits_coupling:
        entries.append((fit.coupling_weights, fit.pair_strengths(), *pair_entries(fit)))
    own, first = fit.penalized_self_weights(), fit.n_basis * fit.n_neurons * fit.fits_coupling
    for term in fit.local_terms:
        if term.parameter is own:
            columns = torch.arange(first, first + term.width, device=fit.device).expand_as(own)
            rows = torch.arange(fit.n_neurons, device=fit.device).unsqueeze(1).expand_as(own)
            entries.append((own, fit.self_filter_strength(), rows, columns))
        first += term.width
    return entries


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
    regularizer: Regularizer, weights: torch.Tensor, strength: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """First and second derivatives of the (separable) penalty in each coupling weight, with
    the ``strength`` [E] of each pair (default: the regularizer's λ)."""
    weights = weights.detach().requires_grad_()
    (first,) = torch.autograd.grad(regularizer(weights, strength), weights, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), weights, materialize_grads=True)
    return first.detach(), second


class LinearDesign:
    r"""How the per-neuron block of fitted parameters moves each neuron's input over one time
    chunk of S bins.

    Neuron i's block is :math:`\beta_i = (W_{0i}, \dots, W_{M-1,i}, \ell_{i1}, \dots)`:
    its incoming coupling weights (one per presynaptic trace: M = B·N on a basis of B
    coupling kernels) and the values of its local terms (per-neuron quantities that move its
    own input linearly: a refractory scale, the weights of a self filter, a bias, or offsets
    of the non-linearity's argument such as θ), and

    .. math::
        g_{ti} = r_i \sum_j F_{tj} W_{ji} + \sum_a L_{tia}\, \ell_{ia}
                 + \text{(terms not fitted)}

    with F the presynaptic traces and L the local design columns (e.g. the refractory-filtered
    own spikes, 1 for a bias, -1 for θ). With the elementwise derivatives of the objective
    :math:`d = \partial f / \partial g` and :math:`w = \partial^2 f / \partial g^2` (f is a
    sum over bins and neurons), block i's gradient and Hessian are :math:`\sum_t d_{ti}
    x_{ti}` and :math:`\sum_t w_{ti} x_{ti} x_{ti}^\top` with :math:`x_{ti} = (r_i F_t,
    L_{ti})`.

    The coupling part :math:`\sum_t w_{ti} F_{tj} F_{tk}` uses the sparsity of the traces:
    the products :math:`F_{tj} F_{tk}` of every bin are stored once as a sparse [M², S]
    matrix, so each Hessian costs one sparse product with w. Traces too dense for that (more
    than ``max_pairs`` products) are refused, or with ``dense_beyond`` multiplied densely,
    :math:`F^\top \mathrm{diag}(w_i) F` for groups of neurons at a time (then also where
    dense products are faster, more than 1/:data:`SPARSE_SHARE` of them nonzero). With
    ``approximate`` (Newton-CG's preconditioner) it is :math:`c_i\, F^\top F`, the traces'
    Gram matrix computed once, scaled by the mean of :math:`w_{ti}` weighted by each bin's
    :math:`\lVert F_t \rVert^2`; the exact Hessian then acts through :meth:`product`.

    Args:
        presynaptic: F [S, M], or None when the coupling is not fitted.
        local: L [S, N, A], or None without local terms (kept neuron-major, [N, A, S]).
        recurrence: :math:`r_i` [N] (or a scalar), the scale of the coupling input.
        max_pairs: largest number of stored products F_tj·F_tk, and of elements of a dense
            group's products (memory bound).
        dense_beyond: the dense products for traces with more than ``max_pairs`` products
            (instead of an InputError) or denser than 1/:data:`SPARSE_SHARE`.
        approximate: Newton-CG's products and preconditioner, dense, instead.
    """

    def __init__(
        self,
        presynaptic: torch.Tensor | None,
        local: torch.Tensor | None,
        recurrence: torch.Tensor,
        max_pairs: int,
        dense_beyond: bool = False,
        approximate: bool = False,
    ) -> None:
        # L neuron-major [N, A, S]: every product with it is one contiguous batched product
        self.local = None if local is None else local.permute(1, 2, 0).contiguous()
        self.coupled = presynaptic is not None
        self.n_traces = presynaptic.shape[1] if presynaptic is not None else 0
        if presynaptic is None:
            return
        self.recurrence = recurrence
        self.max_pairs = max_pairs
        if approximate:  # dense products with F (the traces themselves, no copy)
            self.presynaptic_by_neuron, self.presynaptic_by_bin = presynaptic.t(), presynaptic
            self.bin_mass = presynaptic.square().sum(1)  # ‖F_t‖² [S]
            self.pairs = self.presynaptic = None
            return
        self.presynaptic_by_neuron = to_csr(presynaptic.t().contiguous())
        self.pairs = pair_products(presynaptic, max_pairs, refuse=not dense_beyond)
        self.presynaptic = presynaptic if self.pairs is None else None

    def stored(self, with_traces: bool) -> list[torch.Tensor]:
        """The tensors this design holds (for memory accounting), ``with_traces`` or
        without the traces it was given."""
        held = [self.local]
        if not self.coupled:
            return held
        if self.pairs is None and self.presynaptic is None:  # approximate
            return held + [self.bin_mass] + ([self.presynaptic_by_bin] if with_traces else [])
        for sparse in (self.presynaptic_by_neuron, self.pairs):
            if sparse is not None:
                held += [sparse.values(), sparse.col_indices(), sparse.crow_indices()]
        return held + ([self.presynaptic] if with_traces else [])

    @property
    def width(self) -> int:
        """Block size P per neuron."""
        return self.n_traces + (0 if self.local is None else self.local.shape[1])

    def gradient(self, d: torch.Tensor) -> torch.Tensor:
        r""":math:`\sum_t d_{ti} x_{ti}` [N, P] of every neuron's block, from d [S, N]."""
        n, m = d.shape[1], self.n_traces
        gradient = d.new_zeros(n, self.width)
        if self.local is not None:  # per neuron: L_iᵀ d_i
            gradient[:, m:] = (self.local @ d.t().contiguous().unsqueeze(-1)).squeeze(-1)
        if self.coupled:
            gradient[:, :m] = (self.presynaptic_by_neuron @ d).t() * self.recurrence.expand(
                n
            ).unsqueeze(1)
        return gradient

    def product(
        self, w: torch.Tensor, direction: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        r"""The exact Hessian blocks times ``direction`` [N, P]:
        :math:`\sum_t w_{ti} x_{ti} (x_{ti} \cdot \delta_i)`, from w [S, N], for the neurons
        ``rows`` (an index; all by default; the other rows of the result are 0). Needs
        ``approximate``, which keeps F by bin."""
        n, m = direction.shape[0], self.n_traces
        rows = torch.arange(n, device=direction.device) if rows is None else rows
        local = self.local
        if local is not None and len(rows) < n:
            local = local[rows]
        block = direction[rows]
        if local is not None:  # x_ti · δ_i [n, S], then weighted by w
            moved = (block[:, m:].unsqueeze(1) @ local).squeeze(1)
        else:
            moved = block.new_zeros(len(rows), self.presynaptic_by_bin.shape[0])
        if self.coupled:
            recurrence = self.recurrence.expand(n)[rows].unsqueeze(1)
            moved += (block[:, :m] @ self.presynaptic_by_neuron) * recurrence
        weighted = moved * w.t()[rows]
        product = torch.zeros_like(direction)
        if local is not None:
            product[rows, m:] = (local @ weighted.unsqueeze(-1)).squeeze(-1)
        if self.coupled:
            product[rows, :m] = (weighted @ self.presynaptic_by_bin) * recurrence
        return product

    def constant_parts(self) -> list[torch.Tensor]:
        """This chunk's sums for :class:`GramParts` that do not depend on w: the Gram matrix
        of the traces, their total squared norm and Σ_t L_tia F_t [N, A, M] (needs
        ``approximate``; zeros without coupling)."""
        local = self.local
        n = 0 if local is None else local.shape[0]
        if not self.coupled:
            return [local.new_zeros(()), local.new_zeros(()), local.new_zeros(n, local.shape[1], 0)]
        cross = (
            local @ self.presynaptic_by_bin
            if local is not None
            else self.bin_mass.new_zeros(n, 0, self.n_traces)
        )
        by_bin = self.presynaptic_by_bin
        return [by_bin.t() @ by_bin, self.bin_mass.sum(), cross]

    def weighted_parts(self, w: torch.Tensor) -> list[torch.Tensor]:
        """This chunk's sums for :class:`GramParts` that depend on w [S, N]: the coupling
        and cross masses [N] and the local blocks [N, A, A] (needs ``approximate``)."""
        n = w.shape[1]
        local = self.local_products(w) if self.local is not None else w.new_zeros(n, 0, 0)
        if not self.coupled:
            return [w.new_zeros(n), w.new_zeros(n), local]
        r = self.recurrence.expand(n)
        weighted = self.bin_mass @ w
        return [weighted * r.square(), weighted * r, local]

    def local_products(self, w: torch.Tensor) -> torch.Tensor:
        r"""Every neuron's :math:`L_i^\top \mathrm{diag}(w_i) L_i` [N, A, A], from w [S, N]."""
        return (self.local * w.t().unsqueeze(1)) @ self.local.transpose(1, 2)

    def blocks(self, d: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient [N, P] and Hessian [N, P, P] of every neuron's block, from d and w [S, N]."""
        n, m, width = d.shape[1], self.n_traces, self.width
        gradient = self.gradient(d)
        hessian = d.new_zeros(n, width, width)
        local = self.local
        if local is not None:
            hessian[:, m:, m:] = self.local_products(w)
        if not self.coupled:
            return gradient, hessian
        r, by_trace = self.recurrence.expand(n), self.presynaptic_by_neuron
        hessian[:, :m, :m] = self.coupling_products(w) * r.square().view(n, 1, 1)
        if local is not None:  # Σ_t F_tj w_ti L_tia: [i, a, j]
            cross = torch.stack(
                [(by_trace @ (w * column.t())).t() for column in local.unbind(1)], dim=1
            ) * r.view(n, 1, 1)
            hessian[:, m:, :m] = cross
            hessian[:, :m, m:] = cross.transpose(1, 2)
        return gradient, hessian

    def coupling_products(self, w: torch.Tensor) -> torch.Tensor:
        r""":math:`\sum_t w_{ti} F_{tj} F_{tk}` [i, j, k] = [N, M, M] from w [S, N]: one sparse
        product with the stored pairs, or dense batched products for groups of neurons."""
        n, m = w.shape[1], self.n_traces
        if self.pairs is not None:
            return (self.pairs @ w).view(m, m, n).permute(2, 0, 1)
        traces = self.presynaptic  # [S, M]
        group = max(1, self.max_pairs // (m * len(traces)))
        return torch.cat(
            [(traces.t() * part.t().unsqueeze(1)) @ traces for part in w.split(group, dim=1)]
        )


def pair_products(traces: torch.Tensor, max_pairs: int, refuse: bool = True) -> torch.Tensor | None:
    """Sparse CSR matrix [M², S] whose entry (j·M + k, t) is traces[t, j]·traces[t, k] for
    the M traces [S, M]; beyond ``max_pairs`` products an InputError, or unless ``refuse``
    None, there and where more than 1/:data:`SPARSE_SHARE` of all products are nonzero."""
    n_bins, n = traces.shape
    csr = to_csr(traces)
    rows, columns, values = csr.crow_indices(), csr.col_indices(), csr.values()
    per_bin = rows[1:] - rows[:-1]
    total = int(per_bin.square().sum())
    if not refuse and (total > max_pairs or total * SPARSE_SHARE > n * n * n_bins):
        return None
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
