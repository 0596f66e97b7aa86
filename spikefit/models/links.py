r"""Inverse links: the expected spike count (or probability) per step of a model's input g.

A link reads its parameters (θ, α, β, λ0, Δt) from the model it is evaluated for, so the
parameters stay the model's own (``tune: [theta]``). A model's
:class:`~spikefit.models.emissions.Emission` holds its link; simulation, calibration and fits
all evaluate it there.
"""

from __future__ import annotations

import torch

#: Largest exponent of the logistic odds e^(g - θ): e^±87 are normal float32 numbers, so that
#: sampling never computes with subnormal ones.
ODDS_EXPONENT = 87.0


class Link:
    """The map m = f(g) from a model's input to its expected count or probability per step.
    ``None`` in an emission means the model's own ``non_linearity``."""

    def __call__(self, model, input: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Logistic(Link):
    r""":math:`p = \sigma(g - \theta)\,\Delta t`, a probability per step (Δt ≤ 1 ms)."""

    def __call__(self, model, input: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(input - model.theta) * model.dt

    def hazard(self, model, input: torch.Tensor) -> torch.Tensor:
        r"""Hazard :math:`h = -\log(1 - p)`; for Δt = 1, :math:`\mathrm{softplus}(g - \theta)`
        exactly, without rounding p."""
        if float(model.dt) == 1.0:
            return torch.nn.functional.softplus(input - model.theta)
        return torch.log1p(-self(model, input)).neg_()

    def odds(self, model, input: torch.Tensor) -> torch.Tensor | None:
        r"""Odds :math:`p / (1 - p)` of firing in a step, for Δt = 1 ms: :math:`e^{g - \theta}`,
        its exponent clamped to ±:data:`ODDS_EXPONENT` (where it stays a normal float32:
        the probabilities it leaves out are below 10⁻³⁷); ``None`` for other Δt."""
        if float(model.dt) != 1.0:
            return None
        return torch.exp((input - model.theta).clamp_(-ODDS_EXPONENT, ODDS_EXPONENT))


class Exponential(Link):
    r""":math:`\mu = \Delta t / \alpha \cdot e^{\beta g}`, an expected count per step."""

    def __call__(self, model, input: torch.Tensor) -> torch.Tensor:
        return model.dt / model.alpha * torch.exp(model.beta * input)


class Rectified(Link):
    r""":math:`\mu = \lambda_0 \Delta t\,[g - \theta]_+`, an expected count per step."""

    def __call__(self, model, input: torch.Tensor) -> torch.Tensor:
        return model.lambda_0 * torch.relu(input - model.theta) * model.dt


class Identity(Link):
    """m = g: the input itself (deterministic threshold emissions)."""

    def __call__(self, model, input: torch.Tensor) -> torch.Tensor:
        return input
