r"""Newton steps on every neuron's own parameter, each within a trust radius of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from spikefit.tasks.gauss_newton import Linearization


def diagonal(jacobian: torch.Tensor, n: int) -> torch.Tensor:
    """The diagonal [n] (float64) of a sparse COO (or dense) Jacobian [n, n]."""
    matrix = jacobian.to_sparse().coalesce()
    rows, columns = matrix.indices()
    own = rows == columns
    values = matrix.values()[own].double()
    return torch.zeros(n, dtype=torch.float64, device=values.device).index_add_(
        0, rows[own], values
    )


class SafeguardedNewton(torch.optim.Optimizer):
    r"""Steps that drive noisy residuals :math:`\rho_i(p_i)` to zero, one per value of one
    parameter, each residual depending on its own value alone to first order (a diagonal
    Jacobian: every neuron's rate error against the neuron's own offset).

    ``step(closure)``: the closure returns a :class:`~spikefit.tasks.gauss_newton.Linearization`
    (residuals [N], the Jacobian [N, N], the residuals' sampling variances [N]); every value
    moves by

    .. math::
        \Delta p_i = \mathrm{clip}(-\rho_i / s_i,\; -R_i,\; R_i).

    The slope :math:`s_i` is the secant :math:`(\rho_i - \rho_i') / (p_i - p_i')` of the last
    two steps, the response the network gave (its feedback included), where the change
    stands above the noise (3 standard deviations of both estimates) and has the
    parameter's sign; else the Jacobian's :math:`J_{ii}`, the open-loop response. The trust
    radius :math:`R_i` starts at ``radius``, doubles after a step it cut short while
    :math:`\rho_i` kept its sign (still far from the root) and halves when :math:`\rho_i`
    changed sign (the step overshot). A value whose slope lacks the parameter's sign (the
    sign of :math:`\sum_i J_{ii}`; positive, the value raising its residual, where that is
    zero) — a saturated or silent neuron, whose rate does not respond — moves by its full
    radius toward its root. One parameter.

    Args:
        params: the one parameter, its values in the order of the residuals.
        radius: the first trust radius, in the parameter's units (> 0).
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], radius: float = 1.0) -> None:
        if not radius > 0:
            raise ValueError(f"SafeguardedNewton: radius must be > 0, got {radius}")
        super().__init__(params, dict(radius=radius))
        if len(self.param_groups) != 1 or len(self.param_groups[0]["params"]) != 1:
            raise ValueError("SafeguardedNewton takes one parameter")

    @torch.no_grad()
    def step(self, closure: Callable[[], Linearization]) -> Linearization:  # type: ignore[override]
        """One step; returns the closure's linearization (at the parameter before it)."""
        with torch.enable_grad():
            linear = closure()
        group = self.param_groups[0]
        (parameter,) = group["params"]
        state = self.state[parameter]
        values = parameter.detach().reshape(-1).double()
        residuals, variance = linear.residuals.double(), linear.variance.double()
        jacobian = diagonal(linear.jacobian, values.numel())
        sign = 1.0 if float(jacobian.sum()) >= 0 else -1.0
        # float64 as stored (restoring a checkpoint casts the state to the parameter's dtype)
        radius = state.get("radius", torch.full_like(values, group["radius"])).double()
        slope = jacobian
        if "residuals" in state:
            previous = state["residuals"].double()
            change, response = values - state["values"].double(), residuals - previous
            secant = response / torch.where(change != 0, change, 1.0)
            noise = 3 * (variance + state["variance"].double()).sqrt()
            measured = (change != 0) & (response.abs() > noise) & (secant * sign > 0)
            slope = torch.where(measured, secant, jacobian)
            radius = torch.where(
                residuals * previous < 0,
                radius / 2,
                torch.where(state["cut"].bool(), 2 * radius, radius),
            )
        responds = slope * sign > 0
        newton = -residuals / torch.where(responds, slope, 1.0)
        delta = torch.where(
            responds, newton.clamp(-radius, radius), -residuals.sign() * sign * radius
        )
        parameter.add_(delta.view_as(parameter).to(parameter.dtype))
        cut = ~responds | (newton.abs() > radius)
        state.update(values=values, residuals=residuals, variance=variance, radius=radius, cut=cut)
        return linear
