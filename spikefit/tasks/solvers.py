"""Solvers of likelihood fits: a torch optimizer and how it steps."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from spikefit.checks import positive, whole

#: The objective, its gradient [N, P] in every neuron's block, the preconditioner (an
#: approximate inverse of the Hessian blocks, applied to [N, P] in float64) and the product of
#: the exact Hessian blocks with a direction [N, P], computed for the blocks given by index
#: (the other rows of the direction are 0, and so are theirs of the product).
Curvature = tuple[
    torch.Tensor,
    torch.Tensor,
    Callable[[torch.Tensor], torch.Tensor],
    Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
]


@dataclass
class NewtonSystem:
    """What Newton's method needs from a fit whose parameters form one block per neuron.

    Attributes:
        blocks: returns the objective, its gradient [N, P] and Hessian [N, P, P] in every
            neuron's block (entries that are not fitted: gradient 0, Hessian identity).
        objective: the objective at the current parameters (no gradient).
        to_parameters: a block step [N, P] as one step per optimizer parameter.
        curvature: returns the :data:`Curvature` (for Newton-CG; the same conventions).
    """

    blocks: Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    objective: Callable[[], torch.Tensor]
    to_parameters: Callable[[torch.Tensor], list[torch.Tensor]]
    curvature: Callable[[], Curvature]


@dataclass
class ProximalSystem:
    """What a proximal solver needs from a fit whose penalty is not smooth.

    Attributes:
        smooth: the objective without that penalty (the mean negative log-likelihood), with
            its gradient in the parameters' ``grad`` when called with True.
        penalty: the penalty's value at the parameters.
        prox: applies the penalty's proximal operator for a step size (in place).
    """

    smooth: Callable[[bool], torch.Tensor]
    penalty: Callable[[], torch.Tensor]
    prox: Callable[[float], None]


class Solver:
    """Builds the optimizer and takes one step with a closure that evaluates the objective and
    its gradient on the step's batch.

    ``full_batch`` solvers need every training bin in each step (the data module's
    ``chunks_per_batch=None``); ``needs_blocks`` solvers need the fit's
    :class:`NewtonSystem` too, ``proximal`` ones its :class:`ProximalSystem`.
    """

    full_batch = False
    needs_blocks = False
    approximate_hessian = False
    proximal = False

    def build(self, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        raise NotImplementedError

    def step(
        self,
        optimizer: torch.optim.Optimizer,
        closure: Callable[[], torch.Tensor],
        system: NewtonSystem | ProximalSystem | None = None,
    ) -> tuple[torch.Tensor, bool]:
        """One step; returns the objective before it and whether the solver converged."""
        return optimizer.step(closure=closure), False


class Adam(Solver):
    """Adam on time chunks (long recordings, DDP over time shards).

    Args:
        lr: learning rate.
    """

    def __init__(self, lr: float = 0.01) -> None:
        self.lr = positive(f"{type(self).__name__}.lr", lr)

    def build(self, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.Adam(parameters, lr=self.lr)


class LBFGS(Solver):
    """Full-batch L-BFGS with a strong-Wolfe line search (fast when the recording fits in
    memory). A step runs up to ``max_iter`` iterations; the solver has converged when a step
    stops early on ``tolerance_grad`` (largest gradient entry) or ``tolerance_change``
    (change of the objective, in nats per neuron per bin).

    Args:
        max_iter: iterations per step.
        history_size: curvature pairs kept.
        tolerance_grad: stop when every gradient entry is below this.
        tolerance_change: stop when the objective or the step changes less than this (the
            default stops within ~1e-7 nats per neuron-bin of the optimum, far below the
            sampling error of any likelihood, near the resolution of float32 sums).
    """

    full_batch = True

    def __init__(
        self,
        max_iter: int = 100,
        history_size: int = 20,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-8,
    ) -> None:
        owner = type(self).__name__
        self.max_iter = whole(f"{owner}.max_iter", max_iter, 1)
        self.history_size = whole(f"{owner}.history_size", history_size, 1)
        self.tolerance_grad = positive(f"{owner}.tolerance_grad", tolerance_grad)
        self.tolerance_change = positive(f"{owner}.tolerance_change", tolerance_change)

    def build(self, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.LBFGS(
            parameters,
            max_iter=self.max_iter,
            max_eval=2 * self.max_iter,
            history_size=self.history_size,
            tolerance_grad=self.tolerance_grad,
            tolerance_change=self.tolerance_change,
            line_search_fn="strong_wolfe",
        )

    def step(
        self,
        optimizer: torch.optim.Optimizer,
        closure: Callable[[], torch.Tensor],
        system: NewtonSystem | None = None,
    ) -> tuple[torch.Tensor, bool]:
        state = optimizer.state[optimizer.param_groups[0]["params"][0]]
        before = state.get("n_iter", 0)
        loss = optimizer.step(closure=closure)
        return loss, state["n_iter"] - before < self.max_iter


#: Relative change of a float32 objective below which a decrease cannot be measured.
RESOLUTION = 1e-6


class ProximalGradient(Solver):
    r"""Accelerated proximal gradient (FISTA, Beck & Teboulle 2009, SIAM J. Imaging Sci. 2)
    for penalties that are not smooth (:class:`~spikefit.tasks.regularizers.L1`,
    :class:`~spikefit.tasks.regularizers.GroupLasso` with ``smoothing=0``): each iteration a
    gradient step of size t on the negative log-likelihood f from the extrapolated point y,
    then the penalty's proximal operator,

    .. math::
        x_{k+1} = \mathrm{prox}_{t \lambda \Omega}\big(y_k - t \nabla f(y_k)\big),

    so that weights and whole filters reach exactly 0. t is halved until
    :math:`f(x_{k+1}) \le f(y_k) + \nabla f(y_k)^\top (x_{k+1} - y_k)
    + \lVert x_{k+1} - y_k \rVert^2 / (2t)` and kept for the next iterations (tried twice as
    large at the next step); the momentum restarts where the objective rises. A step runs up to
    ``max_iter`` iterations and has converged when the largest entry of the gradient mapping
    :math:`(y_k - x_{k+1}) / t` is below ``tolerance``.

    Args:
        max_iter: iterations per step.
        tolerance: stop when every entry of the gradient mapping is below this (nats per
            neuron-bin per unit of the parameter).
        step_size: the first step size t (large: it is halved at once where too large; the
            objective is per neuron-bin, so its curvature is small).
    """

    full_batch = True
    proximal = True

    def __init__(self, max_iter: int = 500, tolerance: float = 1e-7, step_size: float = 1e4):
        owner = type(self).__name__
        self.max_iter = whole(f"{owner}.max_iter", max_iter, 1)
        self.tolerance = positive(f"{owner}.tolerance", tolerance)
        self.step_size = positive(f"{owner}.step_size", step_size)

    def build(self, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD(parameters, lr=1.0)  # holds the parameters and the state

    def step(
        self,
        optimizer: torch.optim.Optimizer,
        closure: Callable[[], torch.Tensor],
        system: ProximalSystem | None = None,
    ) -> tuple[torch.Tensor, bool]:
        parameters = optimizer.param_groups[0]["params"]
        state = optimizer.state[parameters[0]]
        step_size = 2 * state["step_size"] if "step_size" in state else self.step_size

        def load(values: list[torch.Tensor]) -> None:
            with torch.no_grad():
                for p, value in zip(parameters, values, strict=True):
                    p.copy_(value)

        def copies() -> list[torch.Tensor]:
            return [p.detach().clone() for p in parameters]

        current, momentum = copies(), 1.0
        extrapolated, objective, first = current, None, None
        for _ in range(self.max_iter):
            load(extrapolated)
            optimizer.zero_grad()
            smooth = system.smooth(True).detach()
            gradients = [torch.zeros_like(p) if p.grad is None else p.grad for p in parameters]
            if objective is None:
                objective = first = smooth + system.penalty().detach()
            while True:
                load([y - step_size * g for y, g in zip(extrapolated, gradients, strict=True)])
                system.prox(step_size)
                trial = copies()
                moves = [x - y for x, y in zip(trial, extrapolated, strict=True)]
                model = smooth + sum((g * d).sum() for g, d in zip(gradients, moves, strict=True))
                model += sum(d.square().sum() for d in moves) / (2 * step_size)
                value = system.smooth(False).detach()
                if value <= model + RESOLUTION * smooth.abs() or step_size < 1e-30:
                    break
                step_size /= 2
            trial_objective = value + system.penalty().detach()
            mapping = max(float(d.abs().max()) for d in moves if d.numel()) / step_size
            if trial_objective > objective and momentum > 1.0:  # restart from the iterate
                extrapolated, momentum = current, 1.0
                continue
            following = (1 + math.sqrt(1 + 4 * momentum**2)) / 2
            extrapolated = [
                x + (momentum - 1) / following * (x - c)
                for x, c in zip(trial, current, strict=True)
            ]
            current, objective, momentum = trial, trial_objective, following
            if mapping < self.tolerance:
                load(current)
                state["step_size"] = step_size
                return first, True
        load(current)
        state["step_size"] = step_size
        return first, False


#: Default memory bound of Newton's sparse Hessian (products of trace pairs stored).
MAX_PAIRS = 50_000_000


class Newton(Solver):
    r"""Newton's method on every neuron's block of parameters at once (iteratively
    reweighted least squares, the classic GLM solver), with a backtracking line search.

    For fits whose parameters are one block per neuron that moves its input linearly: the
    coupling weights, the refractory scale and per-neuron offsets such as θ or b (see
    :class:`~spikefit.tasks.likelihood.newton.LinearDesign`). Each iteration solves the per-neuron
    systems :math:`H_i \delta_i = -\nabla_i f` exactly, so it converges quadratically: a
    handful of iterations instead of the hundred gradient evaluations of L-BFGS. A step
    runs up to ``max_iter`` iterations and has converged when half the Newton decrement
    :math:`\nabla f^\top H^{-1} \nabla f / 2` (the predicted distance to the optimum, in
    nats per neuron per bin) is below ``tolerance``.

    The steps are applied by SGD with learning rate 1, written as gradients.

    Args:
        max_iter: Newton iterations per step.
        tolerance: stop when the predicted distance to the optimum is below this.
        max_pairs: memory bound of the sparse Hessian (products of trace pairs stored).
    """

    full_batch = True
    needs_blocks = True

    def __init__(
        self, max_iter: int = 50, tolerance: float = 1e-10, max_pairs: int = MAX_PAIRS
    ) -> None:
        owner = type(self).__name__
        self.max_iter = whole(f"{owner}.max_iter", max_iter, 1)
        self.tolerance = positive(f"{owner}.tolerance", tolerance)
        self.max_pairs = whole(f"{owner}.max_pairs", max_pairs, 1)

    def build(self, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD(parameters, lr=1.0)

    def step(
        self,
        optimizer: torch.optim.Optimizer,
        closure: Callable[[], torch.Tensor],
        system: NewtonSystem | None = None,
    ) -> tuple[torch.Tensor, bool]:
        parameters = optimizer.param_groups[0]["params"]
        first = None
        for _ in range(self.max_iter):
            objective, gradient, step = self.direction(system)
            first = objective if first is None else first
            decrease = -(gradient.double() * step).sum()
            if decrease / 2 <= self.tolerance:
                return first, True
            directions = system.to_parameters(step.to(gradient.dtype))
            starts = [p.detach().clone() for p in parameters]
            length = 1.0
            while True:
                for p, start, direction in zip(parameters, starts, directions, strict=True):
                    p.grad = p.detach() - start - length * direction  # SGD: p ← p − grad
                optimizer.step()
                trial = system.objective()
                if trial < objective and trial <= objective - 1e-4 * length * decrease:
                    break
                if length < 1e-4 or decrease / 2 < RESOLUTION * objective.abs():
                    for p, start in zip(parameters, starts, strict=True):  # nothing to gain
                        p.data.copy_(start)  # at this precision
                    return first, True
                length /= 2
        return first, False

    def direction(self, system: NewtonSystem) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The objective, its gradient [N, P] and the Newton step [N, P] (float64)."""
        objective, gradient, hessian = system.blocks()
        return objective, gradient, newton_step(gradient, hessian)


class NewtonCG(Newton):
    r"""Newton's method with every neuron's system :math:`H_i \delta_i = -\nabla_i f` solved
    by preconditioned conjugate gradients (truncated Newton): for fits with many
    presynaptic traces per neuron (a basis of B coupling filters on N units: B·N weights per
    neuron), whose exact Hessian blocks cost N·S·(BN)² per iteration. The exact Hessian acts
    only through products (two passes over the traces each), and the preconditioner is the
    Hessian with its coupling part :math:`\sum_t w_{ti} F_t F_t^\top` replaced by a multiple
    of the traces' Gram matrix :math:`F^\top F`, computed once
    (:func:`~spikefit.tasks.likelihood.newton.gram_preconditioner`). Each neuron's CG stops
    when its residual, in the preconditioner's norm, falls below :data:`FORCING` (0.1) times
    its gradient's (each Newton iteration then gains at least that factor), or after
    ``max_cg`` products; a block whose own share of the Newton decrement (estimated in the
    preconditioner's norm) is below ``tolerance`` over the number of blocks takes no step,
    and the products skip the blocks that have stopped. Same line search and stopping rule
    as :class:`Newton`.

    Args:
        max_iter: Newton iterations per step.
        tolerance: stop when the predicted distance to the optimum is below this.
        max_cg: conjugate-gradient products per Newton iteration.
    """

    approximate_hessian = True

    def __init__(self, max_iter: int = 50, tolerance: float = 1e-8, max_cg: int = 50) -> None:
        super().__init__(max_iter, tolerance)
        self.max_cg = whole(f"{type(self).__name__}.max_cg", max_cg, 1)

    def direction(self, system: NewtonSystem) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        objective, gradient, precondition, product = system.curvature()
        step = conjugate_gradients(
            lambda v, rows: product(v.to(gradient.dtype), rows).double(),
            -gradient.double(),
            precondition,
            self.max_cg,
            2 * self.tolerance / len(gradient),
        )
        return objective, gradient, step


#: Newton-CG's forcing term: each neuron's CG stops when its residual is this fraction of its
#: gradient (in the preconditioner's norm).
FORCING = 0.1


def conjugate_gradients(
    product: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    target: torch.Tensor,
    precondition: Callable[[torch.Tensor], torch.Tensor],
    max_products: int,
    floor: float = 0.0,
) -> torch.Tensor:
    r"""Solves every block's :math:`H_i x_i = b_i` ([N, P] each; ``product(x, rows)``
    applies H to the blocks ``rows`` of x) by preconditioned conjugate gradients, each block
    its own; a block stops when its residual in the preconditioner's norm is below
    :data:`FORCING` times :math:`b_i`'s, and does not start when :math:`b_i`'s is below
    ``floor`` (squared norm)."""
    solution = torch.zeros_like(target)
    residual = target.clone()
    preconditioned = precondition(residual)
    rho = (residual * preconditioned).sum(1)  # ‖r_i‖² in M⁻¹ [N]
    goal = (rho * FORCING**2).masked_fill(rho <= floor, torch.inf)
    direction = preconditioned
    for _ in range(max_products):
        active = rho > goal
        rows = active.nonzero().flatten()
        if len(rows) == 0:
            break
        moved = product(direction * active.unsqueeze(1), rows)
        curvature = (direction * moved).sum(1)
        alpha = torch.where(active & (curvature > 0), rho / curvature.clamp(min=1e-300), 0.0)
        solution += alpha.unsqueeze(1) * direction
        residual -= alpha.unsqueeze(1) * moved
        preconditioned = precondition(residual)
        updated = (residual * preconditioned).sum(1)
        beta = (updated / rho.clamp(min=1e-300)).unsqueeze(1)
        direction = torch.where(active.unsqueeze(1), preconditioned + beta * direction, direction)
        rho = torch.where(active, updated, rho)
    return solution


def block_solver(hessian: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    r""":math:`x \mapsto H_i^{-1} x_i` for every block [N, P] (float64), by the Cholesky
    factor of each block scaled to a unit diagonal; a block that is not numerically
    positive definite gets the least Levenberg damping that makes it so."""
    hessian = hessian.double()
    unit = hessian.diagonal(dim1=-2, dim2=-1).clamp(min=1e-300).rsqrt()  # [N, P]
    scaled = hessian * unit.unsqueeze(-1) * unit.unsqueeze(-2)
    eye = torch.eye(hessian.shape[-1], dtype=hessian.dtype, device=hessian.device)
    damping = torch.zeros(len(hessian), 1, 1, dtype=hessian.dtype, device=hessian.device)
    for level in (1e-12, 1e-9, 1e-6, 1e-3, 1.0):
        factor, info = torch.linalg.cholesky_ex(scaled + damping * eye)
        failed = info != 0
        if not failed.any():
            break
        damping[failed] = level

    def solve(x: torch.Tensor) -> torch.Tensor:
        """The solution for x [N, P] (or [N, P, Q]: Q right-hand sides)."""
        if x.dim() == 2:
            return solve(x.unsqueeze(-1)).squeeze(-1)
        return torch.cholesky_solve(x * unit.unsqueeze(-1), factor) * unit.unsqueeze(-1)

    return solve


def newton_step(gradient: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    """:math:`-H_i^{-1} g_i` for every block [N, P] (float64, :func:`block_solver`)."""
    return -block_solver(hessian)(gradient.double())
