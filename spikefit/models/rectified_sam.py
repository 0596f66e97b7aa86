"""Rectified synaptic-activation model (Ocker et al., section S.5)."""

from __future__ import annotations

import torch

from spikefit.checks import non_negative
from spikefit.models.base_model import positive_ms
from spikefit.models.rectified_lnp import RectifiedLNP
from spikefit.models.sa_model import SAModel


class RectifiedSAM(SAModel):
    r"""Synaptic-activation model with a rectified-linear Poisson emission.

    .. math::
        g_i(t+1) &= r \sum_j (W_0)_{ji} s_j(t) + b_i + \mathcal{E}_i(t+1) \\
        \mu_i(t+1) &= \lambda_0 \Delta t \, [g_i(t+1) - \theta]_+ \\
        X_i(t+1) &\sim \mathrm{Poisson}(\mu_i(t+1)) \\
        s_i(t+1) &= s_i(t) (1 - \Delta t / \tau) + X_i(t+1) \Delta t

    Args:
        lambda_0: response gain λ0 ≥ 0 in spikes/ms per unit input (tunable).
        theta: threshold θ (tunable).
        tau: activation time constant τ ≥ Δt in ms (tunable).
        dt: step Δt > 0 in ms.
        r: recurrence scale (tunable).
        b: background input (tunable).
        rng: generator for the Poisson draws.
    """

    emission = RectifiedLNP.emission

    def __init__(
        self,
        lambda_0: float,
        theta: float,
        tau: float,
        dt: float,
        r: float,
        b: float,
        rng: torch.Generator | None = None,
    ) -> None:
        super().__init__(rng)
        self._register("T", 1, dtype=torch.int64)
        self._register("dt", dt, check=positive_ms)
        self._register("lambda_0", lambda_0, tunable=True, check=non_negative)
        self._register("theta", theta, tunable=True)
        self._register("tau", tau, tunable=True, check=self.check_tau)
        self._register("r", r, tunable=True)
        self._register("b", b, tunable=True)
