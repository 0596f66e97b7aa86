"""Threshold synaptic-activation model (Ocker et al., the generative model of the paper)."""

from __future__ import annotations

import math
from functools import partial

import torch

from spikefit.checks import in_range, non_negative
from spikefit.models.base_model import positive_ms
from spikefit.models.emissions import Threshold
from spikefit.models.links import Identity
from spikefit.models.sa_model import SAModel


class ThresholdSAM(SAModel):
    r"""Deterministic-threshold synaptic-activation model with sparse Gaussian background noise.

    .. math::
        g_i(t+1) &= r \sum_j (W_0)_{ji} s_j(t) + b \, (1 + \xi_i m_i) + \mathcal{E}_i(t+1),
        \quad \xi_i \sim \mathcal{N}(0, \sigma^2),\ m_i \sim \mathrm{Bernoulli}(\rho) \\
        X_i(t+1) &= [g_i(t+1) > \theta] \\
        s_i(t+1) &= s_i(t) (1 - \Delta t / \tau) + X_i(t+1) \Delta t

    with ξ and m drawn afresh every step. The non-linearity is the identity; calibration
    differentiates through a sigmoid surrogate of the threshold.

    Args:
        r: recurrence scale (tunable).
        b: background input (tunable).
        tau: activation time constant τ ≥ Δt in ms.
        dt: step Δt > 0 in ms.
        sigma: standard deviation σ ≥ 0 of the noise.
        rho: probability ρ in [0, 1] that a neuron receives noise in a step.
        theta: firing threshold θ.
        rng: generator for the noise.
    """

    emission = Threshold(Identity())

    def __init__(
        self,
        r: float,
        b: float,
        tau: float,
        dt: float,
        sigma: float,
        rho: float,
        theta: float,
        rng: torch.Generator | None = None,
    ) -> None:
        super().__init__(rng)
        self._register("T", 1, dtype=torch.int64)
        self._register("dt", dt, check=positive_ms)
        self._register("tau", tau, check=self.check_tau)
        self._register("sigma", sigma, check=non_negative)
        self._register("rho", rho, check=partial(in_range, low=0, high=1))
        self._register("theta", theta)
        self._register("r", r, tunable=True)
        self._register("b", b, tunable=True)

    def background_input(self, shape: tuple[int, ...], noise: bool = True) -> torch.Tensor:
        r""":math:`b(1 + \xi m)` with fresh noise of ``shape`` (b alone if not ``noise``)."""
        if not noise:
            return self.b
        noise = torch.randn(shape, generator=self._rng, device=self.dt.device) * self.sigma
        active = torch.rand(shape, generator=self._rng, device=self.dt.device) < self.rho
        return self.b * (1 + noise * active)

    def expected_spikes(self, input: torch.Tensor) -> torch.Tensor:
        r"""Firing probability given the noise-free input :math:`g_0`, the noise integrated out:

        .. math::
            P(X = 1) = (1 - \rho)\,[g_0 > \theta]
                       + \rho\,\Phi\!\left(\frac{g_0 - \theta}{|b|\sigma}\right)

        The step's gradient is a surrogate, the fast sigmoid's
        :math:`\tfrac{1}{2} w / (w + |g_0 - \theta|)^2` with :math:`w = |b|\sigma`, whose heavy
        tails still point neurons far from threshold the right way (SuperSpike)."""
        margin = input - self.theta
        width = (self.b.abs() * self.sigma).clamp(min=1e-12)
        surrogate = 0.5 * margin / (width + margin.abs())
        step = (margin > 0).float() + surrogate - surrogate.detach()
        noisy = 0.5 * (1 + torch.erf(margin / (width * math.sqrt(2))))
        return (1 - self.rho) * step + self.rho * noisy
