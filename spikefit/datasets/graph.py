from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torch_geometric.data import Data

from spikefit.checks import InputError
from spikefit.files import load_file


def dense_to_graph(W0: Tensor) -> Data:
    """Network of a dense weight matrix ``W0`` ``[N, N]`` indexed ``[pre, post]``: one edge per
    nonzero entry, ``edge_index`` row 0 = presynaptic, row 1 = postsynaptic, ``W0`` ``[E]``
    float32."""
    if W0.dim() != 2 or W0.shape[0] != W0.shape[1]:
        raise ValueError(f"W0 must be a square [N, N] matrix, got shape {list(W0.shape)}")
    edge_index = W0.nonzero().t().contiguous()
    weights = W0[edge_index[0], edge_index[1]].float()
    return Data(edge_index=edge_index, W0=weights, num_nodes=W0.shape[0])


def graph_to_dense(data: Data) -> Tensor:
    """Dense weight matrix ``[N, N]`` indexed ``[pre, post]`` of a network (block-diagonal for
    a batch of networks), or ``[N, N, B]`` for weights per basis function ``[E, B]``; weights
    of repeated edges add up."""
    n = data.num_nodes
    dense = torch.zeros(n, n, *data.W0.shape[1:], dtype=data.W0.dtype, device=data.W0.device)
    return dense.index_put_(tuple(data.edge_index), data.W0, accumulate=True)


#: What a network file holds (:func:`save_network`).
NETWORK_FILE = (
    "a network saved by spikefit (a dict of edge_index [2, E], W0 [E] or [E, B], num_nodes)"
)


def save_network(data: Data, path: str | Path) -> None:
    """Writes the network ``data`` to ``path`` as the plain dict of its ``edge_index`` [2, E]
    (int64), ``W0`` [E] or [E, B] (float32, one weight per basis function) and ``num_nodes``,
    readable with ``torch.load(weights_only=True)``."""
    torch.save(
        {
            "edge_index": data.edge_index.long().cpu(),
            "W0": data.W0.float().cpu(),
            "num_nodes": int(data.num_nodes),
        },
        path,
    )


def load_network(path: str | Path) -> Data:
    """The network of a file written by :func:`save_network`, read without running code;
    an InputError naming ``path`` for anything else (the graph itself is checked where it
    is simulated)."""
    path = Path(path)
    content = load_file(path, NETWORK_FILE)
    fields = {"edge_index": Tensor, "W0": Tensor, "num_nodes": int}
    if not isinstance(content, dict) or any(
        not isinstance(content.get(key), kind) for key, kind in fields.items()
    ):
        found = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise InputError(str(path), f"holds {found}", NETWORK_FILE)
    return Data(
        edge_index=content["edge_index"].long(),
        W0=content["W0"].float(),
        num_nodes=content["num_nodes"],
    )
