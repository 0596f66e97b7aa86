"""Base class of synaptic-activation models, whose state is an activation s, not a history."""

from __future__ import annotations

import torch

from spikefit.models import engine
from spikefit.models.base_model import BaseModel


class SAModel(BaseModel):
    r"""Synaptic-activation model: the input uses the activation :math:`s` (state [N, 1])

    .. math::
        g_i(t+1) = r \sum_j (W_0)_{ji} \, s_j(t) + b_i + \mathcal{E}_i(t+1)

    and :meth:`update_activation` advances :math:`s` with the new spikes (T = 1).
    """

    fast_blocks = staticmethod(engine.activation_blocks)
    reference_blocks = staticmethod(engine.reference_activation_blocks)

    def update_activation(self, spikes: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
        r""":math:`s_i \leftarrow s_i (1 - \Delta t/\tau) + X_i \Delta t`."""
        return activation * (1 - self.dt / self.tau) + spikes * self.dt
