from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Data


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
