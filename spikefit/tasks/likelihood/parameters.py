"""What a likelihood fit fits: the coupling weights, and probes that the fitted parameters act
on each neuron alone."""

from __future__ import annotations

from collections.abc import Callable

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


def coupling_matrix(edge_index: torch.Tensor, weights: torch.Tensor, n: int) -> torch.Tensor:
    """The weights [E] (or [E, B]) of the pairs ``edge_index`` as a dense [B·N, N] matrix
    indexed [b·N + pre, post], the one the presynaptic traces multiply."""
    n_basis = 1 if weights.dim() == 1 else weights.shape[1]
    rows = coupling_columns(edge_index, n, n_basis)
    posts = edge_index[1].unsqueeze(1).expand_as(rows) if n_basis > 1 else edge_index[1]
    dense = torch.zeros(n_basis * n, n, device=weights.device)
    return dense.index_put((rows.reshape(-1), posts.reshape(-1)), weights.reshape(-1))


def silence(n: int, bins: int) -> Chunk:
    """A chunk of ``bins`` silent bins of ``n`` neurons (no history), for probing."""
    return {"spikes": torch.zeros(n, bins), "start": 0, "bins": bins}


def probe(
    model: BaseModel, chunk_input: ChunkInput, n: int, field: str, per_neuron: list[str]
) -> None:
    """Evaluates the input once on silence, so that the ``per_neuron`` parameters that
    cannot be one per neuron fail here, with their names (an InputError naming ``field``)."""
    bins = model.memory_steps + 2 + (model.memory_steps + 2 == n)
    try:
        rates = model.non_linearity(chunk_input(silence(n, bins)))
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


def offset_signs(
    model: BaseModel,
    chunk_input: ChunkInput,
    n: int,
    fitted: list[str],
    per_neuron: list[str],
    solver: str,
    owner: str,
) -> list[float]:
    """The sign of every ``fitted`` parameter as an offset of the input (:func:`offset_sign`);
    raises an InputError (``<owner>.fit``) unless all are per neuron, as the per-neuron
    blocks of ``solver`` need."""
    shared = [p for p in fitted if p not in per_neuron]
    if shared:
        raise InputError(
            f"{owner}.fit",
            f"solver {solver} fits per-neuron blocks, and {shared} would be shared by all neurons",
            "them in per_neuron, or solver LBFGS",
        )
    return [
        offset_sign(model, chunk_input, n, name, solver, f"{owner}.per_neuron") for name in fitted
    ]


def offset_sign(
    model: BaseModel, chunk_input: ChunkInput, n: int, name: str, solver: str, field: str
) -> float:
    """+1 or -1 when per-neuron parameter ``name`` shifts the argument of the
    non-linearity like the input does (b) or against it (θ); raises an InputError naming
    ``field`` otherwise."""
    parameter, bins = model.get_parameter(name), 7
    shift = torch.linspace(-3, 3, bins * n).view(bins, -1).requires_grad_()
    rates = model.non_linearity(chunk_input(silence(n, bins)) + shift)
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
