r"""The input that spikes already emitted will deliver to the coming steps.

For a model with declared separable kernels (coupling basis :math:`B_b(\tau)`, per-edge
weights :math:`w_{jib}`, self kernel :math:`\mathrm{ref}_i(\tau)`, recurrence r), a spike of
neuron j at step t adds

.. math::
    F_i(t+1+\tau) \mathrel{+}= r_i \sum_b B_b(\tau)\, w_{jib}, \qquad
    F_j(t+1+\tau) \mathrel{+}= \mathrm{ref}_j(\tau)

to the buffer F of the coming inputs, so a step costs one sparse propagation of the spikes
and an O(N·T·B) update instead of the O(E·T) product of every edge with the history window.
"""

from __future__ import annotations

import torch
from torch_geometric.data import Data

from spikefit.models.coupling import SpikePropagator


class InputHistory:
    """The buffer ``future`` [L + T, K·N] of the input of the next block of L steps (and the
    T after), for K trials of N neurons, and the delivery of spikes into it.

    Args:
        model: a model with declared kernels (``coupling_basis``, ``self_kernel``,
            ``recurrence``, ``edge_weights``).
        data: the network(s).
        n_trials: trials K.
        block: steps L per block.
    """

    def __init__(self, model, data: Data, n_trials: int, block: int) -> None:
        n, device = data.num_nodes, data.W0.device
        self.n_neurons, self.n_trials, self.window = n, n_trials, model.window
        r, weight = model.recurrence(), model.basis_weights(data.W0.float())
        if r.dim():  # one r per neuron scales its incoming edges (a scalar r, the kernel)
            weight, r = (
                weight * model.edge_recurrence(data.edge_index).view(-1, *[1] * (weight.dim() - 1)),
                1.0,
            )
        self.propagate = SpikePropagator(data.edge_index, weight, n, n_trials)
        basis = r * model.coupling_basis()  # [B, T]
        coupling = basis.t().contiguous()  # [T, B]
        self.support = int(coupling.nonzero()[:, 0].max()) + 1 if coupling.any() else 0
        self.coupling = coupling[: self.support]
        own = model.self_kernel()  # [T, N] or [T, 1]
        if own is not None:
            own = (own.t() if own.dim() == 2 else own.view(self.window, 1)).contiguous()
            self.ref = own.repeat(1, n_trials) if own.shape[1] > 1 else own
        self.own = own
        self.future = torch.zeros(block + self.window, n_trials * n, device=device)

    @property
    def inputs(self) -> torch.Tensor:
        """The buffer as [L + T, K, N]."""
        return self.future.view(-1, self.n_trials, self.n_neurons)

    def add_drive(self, drive: torch.Tensor, length: int) -> None:
        """Adds the background and stimulus ``drive`` (broadcastable to [L, K, N]) to the
        next ``length`` steps (nothing for a zero scalar)."""
        if drive.dim() or float(drive):
            self.inputs[:length].add_(drive)

    def deliver(self, step: int, active: torch.Tensor, counts: torch.Tensor | None) -> None:
        """Adds the input that the spikes of the flat indices ``active`` (trial·N + neuron)
        at ``step`` of the block, with ``counts`` (None: one each), give the next T steps."""
        if self.support:
            drive = self.propagate(active, counts).view(self.coupling.shape[1], -1)  # [B, K·N]
            coming = self.future[step + 1 : step + 1 + self.support]
            for basis, part in enumerate(drive):  # one multiply-add per function, in order
                coming.addcmul_(self.coupling[:, basis : basis + 1], part)
        if self.own is not None:
            if self.ref.shape[1] > 1:
                source = self.ref.index_select(1, active)
            else:
                source = self.ref.expand(-1, len(active))
            if counts is not None:
                source = source * counts
            self.future[step + 1 : step + 1 + self.window].index_add_(1, active, source)

    def advance(self, length: int, zero_read: bool = True) -> None:
        """Moves the input of the steps after the block to the front (``zero_read``: the
        block's own rows were not zeroed as they were read)."""
        window = self.window
        if zero_read:
            self.future[:length] = 0
        pending = self.future[length : length + window].clone()
        self.future[length : length + window] = 0
        self.future[:window] = pending
