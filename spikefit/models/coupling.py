"""Sparse propagation of spikes along a graph's edges, one presynaptic row at a time."""

from __future__ import annotations

import torch


class SpikePropagator:
    r"""Sums the weights of the outgoing edges of the neurons that spiked.

    .. math::
        y_{k,i} = \sum_{j} (W_0)_{ji} \, X_{k,j}

    for trials :math:`k`. The outgoing edges of every presynaptic neuron are kept in a table
    padded to the largest out-degree and tiled over trials, so a step costs one gather over
    the (few) neurons that spiked instead of a product over all edges.

    Args:
        edge_index: [2, E] (row 0 presynaptic, row 1 postsynaptic).
        weight: [E] edge weights.
        num_nodes: number of neurons N.
        n_trials: number of trials K simulated side by side.
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
        targets = torch.zeros(num_nodes, width, dtype=torch.long, device=device)
        weights = torch.zeros(num_nodes, width, dtype=weight.dtype, device=device)
        targets[pre, slot] = post
        weights[pre, slot] = weight
        offsets = torch.arange(n_trials, device=device).view(-1, 1, 1) * num_nodes
        self.targets = (targets + offsets).view(n_trials * num_nodes, width)
        self.weights = weights.repeat(n_trials, 1)
        self.drive = torch.zeros(n_trials * num_nodes, dtype=weight.dtype, device=device)

    def __call__(self, active: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
        """Synaptic drive [K·N] from the flat indices ``active`` (trial·N + neuron) of the
        neurons that spiked, with their spike ``counts`` (``None``: one spike each). The
        returned buffer is reused by the next call."""
        weights = self.weights.index_select(0, active)
        if counts is not None:
            weights = weights * counts.unsqueeze(1)
        self.drive.zero_()
        self.drive.index_add_(0, self.targets.index_select(0, active).view(-1), weights.view(-1))
        return self.drive

