"""Solvers of likelihood fits: a torch optimizer and how it steps."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


class Solver:
    """Builds the optimizer and takes one step with a closure that evaluates the objective and
    its gradient on the step's batch.

    ``full_batch`` solvers need every training bin in each step (the data module's
    ``chunks_per_batch=None``); the others step on each batch of time chunks.
    """

    full_batch = False

    def build(self, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        raise NotImplementedError

    def step(self, optimizer: torch.optim.Optimizer,
             closure: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, bool]:
        """One step; returns the objective before it and whether the solver converged."""
        return optimizer.step(closure=closure), False


class Adam(Solver):
    """Adam on time chunks (long recordings, DDP over time shards).

    Args:
        lr: learning rate.
    """

    def __init__(self, lr: float = 0.01) -> None:
        self.lr = lr

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

    def __init__(self, max_iter: int = 100, history_size: int = 20,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-8) -> None:
        self.max_iter = max_iter
        self.history_size = history_size
        self.tolerance_grad = tolerance_grad
        self.tolerance_change = tolerance_change

    def build(self, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.LBFGS(parameters, max_iter=self.max_iter,
                                 max_eval=2 * self.max_iter, history_size=self.history_size,
                                 tolerance_grad=self.tolerance_grad,
                                 tolerance_change=self.tolerance_change,
                                 line_search_fn="strong_wolfe")

    def step(self, optimizer: torch.optim.Optimizer,
             closure: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, bool]:
        state = optimizer.state[optimizer.param_groups[0]["params"][0]]
        before = state.get("n_iter", 0)
        loss = optimizer.step(closure=closure)
        return loss, state["n_iter"] - before < self.max_iter
