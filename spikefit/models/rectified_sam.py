"""Rectified synaptic-activation model (Ocker et al., section S.5)."""

from __future__ import annotations

import torch

from spikefit.models.poisson_glm import check_window_and_step
from spikefit.models.sa_model import SAModel


class RectifiedSAM(SAModel):
    r"""Synaptic-activation model with a rectified-linear Poisson emission.

    .. math::
        g_i(t+1) &= r \sum_j (W_0)_{ji} s_j(t) + b_i + \mathcal{E}_i(t+1) \\
        \mu_i(t+1) &= \lambda_0 \Delta t \, [g_i(t+1) - \theta]_+ \\
        X_i(t+1) &\sim \mathrm{Poisson}(\mu_i(t+1)) \\
        s_i(t+1) &= s_i(t) (1 - \Delta t / \tau) + X_i(t+1) \Delta t

    Args:
        lambda_0: response gain λ0 (tunable).
        theta: threshold θ (tunable).
        tau: activation time constant τ in ms (tunable).
        dt: step Δt in ms.
        r: recurrence scale (tunable).
        b: background input (tunable).
        rng: generator for the Poisson draws.
    """

    def __init__(self, lambda_0: float, theta: float, tau: float, dt: float, r: float, b: float,
                 rng: torch.Generator | None = None) -> None:
        super().__init__(rng)
        check_window_and_step("RectifiedSAM", 1, dt)
        self._register("T", 1, dtype=torch.int64)
        self._register("dt", dt)
        self._register("lambda_0", lambda_0, tunable=True)
        self._register("theta", theta, tunable=True)
        self._register("tau", tau, tunable=True)
        self._register("r", r, tunable=True)
        self._register("b", b, tunable=True)

    def input(self, edge_index: torch.Tensor, W: torch.Tensor, state: torch.Tensor,
              t: int = -1) -> torch.Tensor:
        r""":math:`g_i(t+1)` from the activation ``state`` [N, 1] and ``W`` [E, 1]."""
        return self.r * self.synaptic_input(edge_index, W, state) + self.b + self.stimulus_input(t)

    def non_linearity(self, input: torch.Tensor) -> torch.Tensor:
        r""":math:`\mu = \lambda_0 \Delta t [g - \theta]_+`."""
        return self.lambda_0 * torch.relu(input - self.theta) * self.dt

    def emit_spikes(self, rates: torch.Tensor) -> torch.Tensor:
        r""":math:`X \sim \mathrm{Poisson}(\mu)` (integer counts as floats)."""
        return torch.poisson(rates, generator=self._rng)
