"""Solvers of likelihood fits: a torch optimizer and how it steps."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from spikefit.checks import positive, whole


@dataclass
class NewtonSystem:
    """What Newton's method needs from a fit whose parameters form one block per neuron.

    Attributes:
        blocks: returns the objective, its gradient [N, P] and Hessian [N, P, P] in every
            neuron's block (entries that are not fitted: gradient 0, Hessian identity).
        objective: the objective at the current parameters (no gradient).
        to_parameters: a block step [N, P] as one step per optimizer parameter.
    """

    blocks: Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    objective: Callable[[], torch.Tensor]
    to_parameters: Callable[[torch.Tensor], list[torch.Tensor]]


class Solver:
    """Builds the optimizer and takes one step with a closure that evaluates the objective and
    its gradient on the step's batch.

    ``full_batch`` solvers need every training bin in each step (the data module's
    ``chunks_per_batch=None``); ``needs_blocks`` solvers need the fit's
    :class:`NewtonSystem` too.
    """

    full_batch = False
    needs_blocks = False

    def build(self, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        raise NotImplementedError

    def step(
        self,
        optimizer: torch.optim.Optimizer,
        closure: Callable[[], torch.Tensor],
        system: NewtonSystem | None = None,
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
            objective, gradient, hessian = system.blocks()
            first = objective if first is None else first
            step = newton_step(gradient, hessian)
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


def newton_step(gradient: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    """:math:`-H_i^{-1} g_i` for every block [N, P] (float64). Each block is scaled to a unit
    diagonal first; a block that is not numerically positive definite gets the least
    Levenberg damping that makes it so."""
    hessian, gradient = hessian.double(), gradient.double()
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
    step = torch.cholesky_solve((gradient * unit).unsqueeze(-1), factor).squeeze(-1)
    return -step * unit
