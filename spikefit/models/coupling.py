"""Sparse propagation of spikes along a graph's edges, one presynaptic row at a time."""

from __future__ import annotations

import warnings

import torch


class SpikePropagator:
    r"""Sums the weights of the outgoing edges of the neurons that spiked.

    .. math::
        y_{b,k,i} = \sum_{j} w_{jib} \, X_{k,j}

    for trials :math:`k` and the B weights of every edge (one per basis function of the
    coupling kernel; B = 1 for the seed models, whose weight is :math:`(W_0)_{ji}`). The
    outgoing edges of every presynaptic neuron are kept in a table padded to the largest
    out-degree (padding: target 0, weight 0), so a step costs one gather over the (few)
    neurons that spiked instead of a product over all edges; the table is one trial's,
    shifted by trial·N for the others.

    Args:
        edge_index: [2, E] (row 0 presynaptic, row 1 postsynaptic).
        weight: [E] edge weights, or [E, B] per basis function.
        num_nodes: number of neurons N.
        n_trials: number of trials K simulated side by side.

    Attributes:
        targets: [N, D] postsynaptic neurons of every presynaptic neuron's edges (ascending,
            then padding).
        degrees: [N] the number of edges of every presynaptic neuron.
        weights: [N, D] (or [N, D, B]) their weights.
    """

    def __init__(
        self, edge_index: torch.Tensor, weight: torch.Tensor, num_nodes: int, n_trials: int = 1
    ) -> None:
        pre, post = edge_index
        device = weight.device
        out_degree = torch.bincount(pre, minlength=num_nodes)
        width = int(out_degree.max()) if pre.numel() else 0
        key = pre * num_nodes + post
        if not bool((key[1:] >= key[:-1]).all()):  # networks usually come sorted
            order = torch.argsort(key, stable=True)
            pre, post, weight = pre[order], post[order], weight[order]
        slot = (
            torch.arange(pre.numel(), device=device)
            - (torch.cumsum(out_degree, 0) - out_degree)[pre]
        )
        self.targets = torch.zeros(num_nodes, width, dtype=torch.long, device=device)
        self.weights = torch.zeros(
            num_nodes, width, *weight.shape[1:], dtype=weight.dtype, device=device
        )
        self.targets[pre, slot] = post
        self.weights[pre, slot] = weight
        self.degrees = out_degree
        self.n_trials = n_trials
        self.drive = torch.zeros(
            *weight.shape[1:], n_trials * num_nodes, dtype=weight.dtype, device=device
        )

    def __call__(self, active: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
        """Synaptic drive [K·N] (or [B, K·N]) from the flat indices ``active`` (trial·N +
        neuron) of the neurons that spiked, with their spike ``counts`` (``None``: one spike
        each). The returned buffer is reused by the next call."""
        neurons = active % self.targets.shape[0] if self.n_trials > 1 else active
        targets = self.targets.index_select(0, neurons)
        if self.n_trials > 1:
            targets = targets + (active - neurons).unsqueeze(1)
        weights = self.weights.index_select(0, neurons)
        if counts is not None:
            weights = weights * counts.view(-1, *[1] * (weights.dim() - 1))
        self.drive.zero_()
        if weights.dim() == 2:
            self.drive.index_add_(0, targets.view(-1), weights.view(-1))
        else:
            self.drive.index_add_(1, targets.view(-1), weights.flatten(0, 1).t())
        return self.drive


def to_csr(matrix: torch.Tensor) -> torch.Tensor:
    """``matrix`` (dense or COO) as sparse CSR, without torch's note that CSR is in beta."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
        return matrix.coalesce().to_sparse_csr() if matrix.is_sparse else matrix.to_sparse_csr()


def postsynaptic_sums(
    edge_index: torch.Tensor, weight: torch.Tensor, num_nodes: int
) -> torch.Tensor:
    r"""The matrix [N, B·N] (sparse CSR, indexed [post, b·N + pre]) whose product with
    presynaptic values [B·N, S] (basis b of neuron j in row b·N + j) gives every neuron's
    weighted input sum :math:`\sum_{j,b} w_{jib} x_{bj}`; ``weight`` is [E] (B = 1) or
    [E, B]."""
    if weight.dim() == 1:
        return to_csr(
            torch.sparse_coo_tensor(
                edge_index.flip(0), weight, (num_nodes, num_nodes), check_invariants=True
            )
        )
    n_basis = weight.shape[1]
    pre, post = edge_index
    columns = torch.arange(n_basis, device=pre.device).unsqueeze(0) * num_nodes + pre.unsqueeze(1)
    index = torch.stack([post.unsqueeze(1).expand_as(columns).reshape(-1), columns.reshape(-1)])
    return to_csr(
        torch.sparse_coo_tensor(
            index, weight.reshape(-1), (num_nodes, n_basis * num_nodes), check_invariants=True
        )
    )
