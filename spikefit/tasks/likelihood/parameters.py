"""What a likelihood fit fits: the coupling weights, and probes that the fitted parameters act
on each neuron alone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch_geometric.data import Data

from spikefit.checks import InputError
from spikefit.data.spike_trains import Chunk
from spikefit.models import BaseModel

#: How the coupling weights W are fitted (see LikelihoodFit's ``coupling``).
COUPLINGS = ("dense", "graph", "fixed", "none")
#: The input g [S, N] of a chunk's last S bins (LikelihoodFit.chunk_input).
ChunkInput = Callable[[Chunk], torch.Tensor]


def coupling_of(
    coupling: str, network: Data | None, n: int, n_basis: int, field: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``edge_index`` [2, E] of the coupled pairs and their starting weights, [E] (or [E, B]
    on a basis of ``n_basis`` > 1 coupling kernels): 0 where fitted (``dense``: all N(N-1)
    pairs, ``graph``: the network's edges), the network's for ``fixed``, none for ``none``.
    Raises an InputError naming ``field`` when the network is needed and missing or its
    weights do not fit the basis."""
    if coupling in ("graph", "fixed") and network is None:
        raise InputError(
            field,
            f"{coupling!r} needs the network",
            "data.network: a [N, N] connectivity matrix, or coupling dense",
        )
    if coupling == "dense":
        edge_index = (~torch.eye(n, dtype=torch.bool)).nonzero().t()
    elif coupling == "none":
        edge_index = torch.zeros(2, 0, dtype=torch.long)
    else:
        edge_index = network.edge_index
    shape = (edge_index.shape[1], n_basis)[: 1 + (n_basis > 1)]
    if coupling in ("dense", "graph", "none"):
        weights = torch.zeros(shape)
    else:
        weights = network.W0
        if weights.shape != shape:
            raise InputError(
                field,
                f"the network's weights have shape {list(weights.shape)} "
                f"and the model's coupling basis {n_basis} functions",
                f"weights of shape {list(shape)}",
            )
    return edge_index.clone(), weights.float().clone()


def coupling_columns(edge_index: torch.Tensor, n: int, n_basis: int) -> torch.Tensor:
    """The row of every pair's weight in the presynaptic traces [B·N] (basis b of neuron j
    in row b·N + j): [E], or [E, B] on a basis."""
    pre = edge_index[0]
    if n_basis == 1:
        return pre
    return torch.arange(n_basis, device=pre.device) * n + pre.unsqueeze(1)


def filter_areas(weights: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    r"""The integral over lags of every pair's coupling filter [E],
    :math:`\sum_b w_{eb} \sum_\tau B_b(\tau)`, from its weights [E] or [E, B] on the basis
    [B, T]."""
    return weights.reshape(len(weights), len(basis)) @ basis.sum(1).to(weights.dtype)


def coupling_matrix(edge_index: torch.Tensor, weights: torch.Tensor, n: int) -> torch.Tensor:
    """The weights [E] (or [E, B]) of the pairs ``edge_index`` as a dense [B·N, N] matrix
    indexed [b·N + pre, post], the one the presynaptic traces multiply."""
    n_basis = 1 if weights.dim() == 1 else weights.shape[1]
    rows = coupling_columns(edge_index, n, n_basis)
    posts = edge_index[1].unsqueeze(1).expand_as(rows) if n_basis > 1 else edge_index[1]
    dense = torch.zeros(n_basis * n, n, device=weights.device)
    return dense.index_put((rows.reshape(-1), posts.reshape(-1)), weights.reshape(-1))


def silence(n: int, bins: int, n_covariates: int = 0) -> Chunk:
    """A chunk of ``bins`` silent bins of ``n`` neurons (no history) and ``n_covariates``
    zero covariates, for probing."""
    zeros = torch.zeros(n_covariates, bins)
    return {"spikes": torch.zeros(n, bins), "start": 0, "bins": bins, "covariates": zeros}


def probe(
    model: BaseModel, chunk_input: ChunkInput, n: int, field: str, per_neuron: list[str]
) -> None:
    """Evaluates the input once on silence, so that the ``per_neuron`` parameters that
    cannot be one per neuron fail here, with their names (an InputError naming ``field``)."""
    bins = model.memory_steps + 2 + (model.memory_steps + 2 == n)
    try:
        rates = model.non_linearity(chunk_input(silence(n, bins, model.n_covariates)))
    except RuntimeError as error:
        raise InputError(
            field,
            f"{per_neuron} cannot all be one value per neuron in {type(model).__name__} ({error})",
            "parameters that act on each neuron alone",
        ) from None
    if rates.shape != (bins, n):
        raise InputError(
            field,
            f"{per_neuron} give rates of shape {list(rates.shape)}",
            f"[bins, N] = {[bins, n]}",
        )


@dataclass
class LocalTerm:
    """A per-neuron fitted quantity that moves its own neuron alone, linearly: through the
    input g (``sign`` None: its design columns come from autograd) or as an offset of the
    non-linearity's argument with ``sign`` ±1 (θ: -1).

    Attributes:
        name: the fitted name (``refractory_scale`` or a model parameter).
        parameter: its values, [N] or [N, A].
        sign: ±1 for an offset, None for a term of the input.
    """

    name: str
    parameter: torch.Tensor
    sign: float | None

    @property
    def width(self) -> int:
        """Columns A of the term in every neuron's block."""
        return 1 if self.parameter.dim() == 1 else self.parameter.shape[1]


def local_terms(
    model: BaseModel,
    chunk_input: ChunkInput,
    n: int,
    terms: list[tuple[str, torch.Tensor]],
    per_neuron: list[str],
    solver: str,
    owner: str,
) -> list[LocalTerm]:
    """The per-neuron blocks' terms of Newton's method: every fitted ``(name, parameter)``
    either enters the input linearly and locally (:func:`check_linear`) or shifts the
    non-linearity's argument (:func:`offset_sign`). Raises an InputError (``<owner>.fit``)
    for a shared parameter, or naming ``<owner>.per_neuron`` for one that is neither."""
    shared = [name for name, _ in terms if name not in per_neuron and name != "refractory_scale"]
    if shared:
        raise InputError(
            f"{owner}.fit",
            f"solver {solver} fits per-neuron blocks, and {shared} would be shared by all neurons",
            "them in per_neuron, or solver LBFGS",
        )
    field, local = f"{owner}.per_neuron", []
    probe = random_chunk(n, model.memory_steps + 40, model.n_covariates)
    for name, parameter in terms:
        if chunk_input(probe).requires_grad and input_depends_on(chunk_input, probe, parameter):
            check_linear(chunk_input, probe, parameter, name, solver, field)
            local.append(LocalTerm(name, parameter, None))
        else:
            local.append(
                LocalTerm(name, parameter, offset_sign(model, chunk_input, n, name, solver, field))
            )
    return local


def block_terms(
    model: BaseModel,
    chunk_input: ChunkInput,
    n: int,
    terms: list[tuple[str, torch.Tensor]],
    per_neuron: list[str],
    owner: str,
) -> tuple[list[LocalTerm], list[str]]:
    """The fitted ``(name, parameter)`` that :func:`local_terms` takes into per-neuron blocks,
    and the names of the others (shared, or moving the input non-linearly)."""
    local, outside = [], []
    for term in terms:
        try:
            local += local_terms(model, chunk_input, n, [term], per_neuron, "blocks", owner)
        except InputError:
            outside.append(term[0])
    return local, outside


def random_chunk(n: int, bins: int, n_covariates: int = 0) -> Chunk:
    """A chunk of ``bins`` random spikes of ``n`` neurons (one in ten bins) and
    ``n_covariates`` standard normal covariates, for probing."""
    generator = torch.Generator().manual_seed(0)
    spikes = (torch.rand(n, bins, generator=generator) < 0.1).float()
    covariates = torch.randn(n_covariates, bins, generator=generator)
    return {"spikes": spikes, "start": 0, "bins": bins, "covariates": covariates}


def input_depends_on(chunk_input: ChunkInput, chunk: Chunk, parameter: torch.Tensor) -> bool:
    """Whether the input of ``chunk`` has a nonzero derivative in ``parameter``."""
    (gradient,) = torch.autograd.grad(
        chunk_input(chunk).sum(), parameter, allow_unused=True, materialize_grads=True
    )
    return bool(gradient.abs().sum() > 0)


def check_linear(
    chunk_input: ChunkInput,
    chunk: Chunk,
    parameter: torch.Tensor,
    name: str,
    solver: str,
    field: str,
) -> None:
    """Raises an InputError naming ``field`` unless the input is linear in ``parameter``
    (the same design columns at other values) and every neuron's values move its own input
    alone."""
    columns = design_columns(chunk_input, chunk, [parameter])
    with torch.no_grad():
        start, neuron_0 = parameter.detach().clone(), chunk_input(chunk)
        parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)))
        moved = chunk_input(chunk)
    linear = torch.allclose(design_columns(chunk_input, chunk, [parameter]), columns, atol=1e-5)
    with torch.no_grad():
        parameter.copy_(start)
        parameter[0] += 1.0
        others = (chunk_input(chunk) - neuron_0)[:, 1:]
        parameter.copy_(start)
    local = bool(others.abs().max() < 1e-5 * (1 + neuron_0.abs().max()))
    if not (linear and local) or not torch.isfinite(moved).all():
        raise InputError(
            field,
            f"solver {solver} needs terms that move each neuron's input linearly, and '{name}' "
            f"{'reaches other neurons' if not local else 'is not linear in the input'}",
            "solver LBFGS for it",
        )


def design_columns(
    chunk_input: ChunkInput, chunk: Chunk, parameters: list[torch.Tensor]
) -> torch.Tensor:
    r""":math:`\partial g_{ti} / \partial p_{ia}` [S, N, A] of the chunk's input for the local
    ``parameters`` ([N] or [N, A] each, their columns in order), by a backward pass through
    the input and one more per column (the vector-Jacobian product is linear in its probe)."""
    with torch.enable_grad():
        g = chunk_input(chunk)
        probe = torch.zeros_like(g, requires_grad=True)
        products = torch.autograd.grad(
            g, parameters, grad_outputs=probe, create_graph=True, allow_unused=True
        )
        columns = []
        for parameter, product in zip(parameters, products, strict=True):
            width = 1 if parameter.dim() == 1 else parameter.shape[1]
            for a in range(width):
                value = None if product is None else product.view(len(g[0]), width)[:, a]
                if value is None or not value.requires_grad:
                    columns.append(torch.zeros_like(g))
                    continue
                (column,) = torch.autograd.grad(value.sum(), probe, retain_graph=True)
                columns.append(column)
    return torch.stack(columns, dim=-1).detach()


def offset_sign(
    model: BaseModel, chunk_input: ChunkInput, n: int, name: str, solver: str, field: str
) -> float:
    """+1 or -1 when per-neuron parameter ``name`` shifts the argument of the
    non-linearity like the input does (b) or against it (θ); raises an InputError naming
    ``field`` otherwise."""
    parameter, bins = model.get_parameter(name), 7
    shift = torch.linspace(-3, 3, bins * n).view(bins, -1).requires_grad_()
    rates = model.non_linearity(chunk_input(silence(n, bins, model.n_covariates)) + shift)
    weights = torch.rand(rates.shape, generator=torch.Generator().manual_seed(0))
    by_input, by_parameter = torch.autograd.grad(
        (rates * weights).sum(), [shift, parameter], materialize_grads=True
    )
    for sign in (1.0, -1.0):
        if torch.allclose(by_parameter, sign * by_input.sum(0), rtol=1e-4, atol=1e-7):
            return sign
    raise InputError(
        field,
        f"solver {solver} needs offsets, and '{name}' does not shift the "
        f"input of the non-linearity (as θ or b do)",
        "solver LBFGS for it",
    )
