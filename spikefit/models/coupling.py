"""Sparse propagation of spikes along a graph's edges, one presynaptic row at a time."""

from __future__ import annotations

import warnings

import torch


class SpikePropagator:
    r"""Sums the weights of the outgoing edges of the neurons that spiked.

    .. math::
        y_{k,i} = \sum_{j} (W_0)_{ji} \, X_{k,j}

    for trials :math:`k`. The outgoing edges of every presynaptic neuron are kept in a table
    padded to the largest out-degree (padding: target 0, weight 0), so a step costs one gather
    over the (few) neurons that spiked instead of a product over all edges; the table is one
    trial's, shifted by trial·N for the others.

    Args:
        edge_index: [2, E] (row 0 presynaptic, row 1 postsynaptic).
        weight: [E] edge weights.
        num_nodes: number of neurons N.
        n_trials: number of trials K simulated side by side.

    Attributes:
        targets: [N, D] postsynaptic neurons of every presynaptic neuron's edges.
        weights: [N, D] their weights.
    """

    def __init__(self, edge_index: torch.Tensor, weight: torch.Tensor, num_nodes: int,
                 n_trials: int = 1) -> None:
        pre, post = edge_index
        device = weight.device
        out_degree = torch.bincount(pre, minlength=num_nodes)
        width = int(out_degree.max()) if pre.numel() else 0
        order = torch.argsort(pre * num_nodes + post)
        pre, post, weight = pre[order], post[order], weight[order]
        slot = torch.arange(pre.numel(), device=device) - (torch.cumsum(out_degree, 0)
                                                           - out_degree)[pre]
        self.targets = torch.zeros(num_nodes, width, dtype=torch.long, device=device)
        self.weights = torch.zeros(num_nodes, width, dtype=weight.dtype, device=device)
        self.targets[pre, slot] = post
        self.weights[pre, slot] = weight
        self.n_trials = n_trials
        self.drive = torch.zeros(n_trials * num_nodes, dtype=weight.dtype, device=device)

    def __call__(self, active: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
        """Synaptic drive [K·N] from the flat indices ``active`` (trial·N + neuron) of the
        neurons that spiked, with their spike ``counts`` (``None``: one spike each). The
        returned buffer is reused by the next call."""
        neurons = active % self.targets.shape[0] if self.n_trials > 1 else active
        targets = self.targets.index_select(0, neurons)
        if self.n_trials > 1:
            targets = targets + (active - neurons).unsqueeze(1)
        weights = self.weights.index_select(0, neurons)
        if counts is not None:
            weights = weights * counts.unsqueeze(1)
        self.drive.zero_()
        self.drive.index_add_(0, targets.view(-1), weights.view(-1))
        return self.drive


def to_csr(matrix: torch.Tensor) -> torch.Tensor:
    """``matrix`` (dense or COO) as sparse CSR, without torch's note that CSR is in beta."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
        return matrix.coalesce().to_sparse_csr() if matrix.is_sparse else matrix.to_sparse_csr()


def postsynaptic_sums(edge_index: torch.Tensor, weight: torch.Tensor,
                      num_nodes: int) -> torch.Tensor:
    r"""The matrix [N, N] (sparse CSR, indexed [post, pre]) whose product with presynaptic
    values [N, S] gives every neuron's weighted input sum :math:`\sum_j (W_0)_{ji} x_j`."""
    return to_csr(torch.sparse_coo_tensor(edge_index.flip(0), weight, (num_nodes, num_nodes),
                                          check_invariants=True))
