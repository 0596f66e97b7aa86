"""Base class of synaptic-activation models, whose state is an activation s, not a history."""

from __future__ import annotations

import math

import torch

from spikefit.checks import satisfies
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
    #: Teacher forcing rebuilds the activation by :meth:`presynaptic_trace`, which declares
    #: the update rule: a subclass that overrides :meth:`update_activation` alone runs its
    #: own stages.
    KERNEL_DECLARATIONS = (*BaseModel.KERNEL_DECLARATIONS, "presynaptic_trace")
    INPUT_STAGE = (*BaseModel.INPUT_STAGE, "update_activation")

    def check_tau(self, field: str, tau: float | torch.Tensor) -> float | torch.Tensor:
        r"""``tau`` if it is ≥ Δt in ms (compared in Δt's precision; Δt is registered first): a
        shorter τ makes :math:`1 - \Delta t/\tau < 0`, so the activation decays below zero."""
        return satisfies(
            field,
            tau,
            lambda values: values.to(self.dt.dtype) >= self.dt,
            f"a time constant ≥ dt = {float(self.dt):g} ms, so that 1 - dt/tau ≥ 0",
        )

    def update_activation(self, spikes: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
        r""":math:`s_i \leftarrow s_i (1 - \Delta t/\tau) + X_i \Delta t`."""
        return activation * (1 - self.dt / self.tau) + spikes * self.dt

    @property
    def memory_steps(self) -> int:
        """Five activation time constants, in steps (the activation forgets by e^-5)."""
        return math.ceil(5 * float(self.tau) / float(self.dt))

    def presynaptic_trace(self, spikes: torch.Tensor, chunk: int = 128) -> torch.Tensor:
        r"""Activation :math:`s(t-1)` feeding step t [K, N, S], from the recorded spikes with
        :math:`s(t) = a\,s(t-1) + \Delta t\,X(t)`, :math:`a = 1 - \Delta t/\tau`, s = 0
        before the raster. Evaluated in chunks of ``chunk`` steps as one product with the
        decay matrix :math:`a^{i-j}` per chunk (differentiable in τ)."""
        decay = 1 - self.dt / self.tau
        lags = torch.arange(chunk, device=spikes.device)
        powers = decay ** (lags.unsqueeze(1) - lags).clamp(min=0).float()
        transfer = torch.where(lags.unsqueeze(1) >= lags, powers, 0.0)  # [i, j] = a^(i-j)
        activation = torch.zeros_like(spikes[..., 0])
        parts = []
        for begin in range(0, spikes.shape[-1], chunk):
            drive = spikes[..., begin : begin + chunk] * self.dt
            width = drive.shape[-1]
            carried = activation.unsqueeze(-1) * decay ** (lags[:width] + 1)
            block = drive @ transfer[:width, :width].t() + carried
            parts.append(block)
            activation = block[..., -1]
        activation = torch.cat(parts, dim=-1)
        return torch.nn.functional.pad(activation, (1, 0))[..., :-1]

    def input_by_steps(self, data, spikes: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Teacher forcing through the model's own :meth:`input` and
        :meth:`update_activation`: g [K, N, S], the activation rebuilt step by step from the
        recorded spikes (zero before the raster), one call per trial and step."""
        n = spikes.shape[1]
        W, edge_index = self.connectivity_filter(data.W0.float(), data.edge_index, n)
        inputs = []
        for trial in spikes.float():
            activation, steps = torch.zeros(n, 1, device=spikes.device), []
            for step in range(spikes.shape[2]):
                steps.append(self.input(edge_index, W, activation, t=start + step))
                activation = self.update_activation(trial[:, step : step + 1], activation)
            inputs.append(torch.stack(steps, dim=-1))
        return torch.stack(inputs)
