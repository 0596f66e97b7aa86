"""The sparse autograd Jacobian of the calibration's errors in the tuned parameters."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

#: ``check(error, own, diagonals)``: raises unless a per-neuron target's ``error`` [N]
#: depends on the per-neuron parameters ``own`` only through each neuron's own value.
LocalityCheck = Callable[[torch.Tensor, list[torch.Tensor], list[torch.Tensor | None]], None]


def vector_jacobian(
    inputs: list[torch.Tensor], output: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """A probe u shaped like ``output`` and the products uᵀ d(output)/d(input) for every
    input, differentiable in u (for :func:`jacobian_vector`)."""
    probe = torch.zeros_like(output, requires_grad=True)
    products = torch.autograd.grad(
        output, inputs, grad_outputs=probe, create_graph=True, allow_unused=True
    )
    return probe, list(products)


def jacobian_vector(
    probe: torch.Tensor, products: list[torch.Tensor | None], tangents: list[torch.Tensor]
) -> torch.Tensor:
    """The Jacobian-vector product Σ d(output)/d(input) · tangent by a second reverse pass
    through :func:`vector_jacobian`'s products (zeros where the output does not depend on
    the inputs)."""
    total = sum(
        (
            (product * tangent).sum()
            for product, tangent in zip(products, tangents, strict=True)
            if product is not None and product.requires_grad
        ),
        torch.zeros(()),
    )
    if not total.requires_grad:
        return torch.zeros_like(probe)
    (result,) = torch.autograd.grad(total, probe, retain_graph=True, allow_unused=True)
    return torch.zeros_like(probe) if result is None else result


def is_local(
    error: torch.Tensor,
    own: list[torch.Tensor],
    diagonals: list[torch.Tensor | None],
    generator: torch.Generator,
) -> bool:
    """Whether each neuron's ``error`` [N] depends on the per-neuron parameters ``own`` only
    through the neuron's own values (their ``diagonals``, d error_i / d own_i), by one random
    Jacobian-vector product."""
    tangents = [torch.randn(p.shape, generator=generator).to(p.device) for p in own]
    probe, products = vector_jacobian(own, error)
    exact = jacobian_vector(probe, products, tangents)
    diagonal = sum(
        (d * t for d, t in zip(diagonals, tangents, strict=True) if d is not None),
        torch.zeros_like(error),
    )
    return torch.allclose(
        exact, diagonal, rtol=1e-3, atol=1e-4 * float(diagonal.abs().max()) + 1e-12
    )


class Entries:
    """The nonzeros of a sparse matrix, gathered block by block."""

    def __init__(self) -> None:
        self.rows: list[torch.Tensor] = []
        self.columns: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def add(
        self, row: torch.Tensor | int, column: torch.Tensor | int, value: torch.Tensor | None
    ) -> None:
        """Entries at (``row``, ``column``) (broadcast to ``value``; none for None)."""
        if value is not None:
            value = value.detach().reshape(-1)
            self.rows.append(torch.as_tensor(row, device=value.device).expand_as(value))
            self.columns.append(torch.as_tensor(column, device=value.device).expand_as(value))
            self.values.append(value)

    def matrix(self, shape: tuple[int, int], device: torch.device) -> torch.Tensor:
        """The sparse COO matrix of ``shape`` (empty where nothing was added)."""
        if not self.values:
            return torch.sparse_coo_tensor(
                torch.zeros(2, 0, dtype=torch.long), torch.zeros(0), shape
            ).to(device)
        indices = torch.stack([torch.cat(self.rows), torch.cat(self.columns)]).long()
        return torch.sparse_coo_tensor(
            indices, torch.cat(self.values), shape, check_invariants=True
        )


def sparse_jacobian(
    errors: list[torch.Tensor],
    parameters: list[torch.Tensor],
    local: list[bool],
    check_locality: LocalityCheck,
) -> torch.Tensor:
    """J [R, P] (sparse COO) of the targets' ``errors`` (flattened in order; a scalar or one
    per neuron each) with respect to the ``parameters`` (flattened in order; ``local``: one
    value per neuron).

    A scalar target's row is one backward pass. A per-neuron target's errors depend on a
    per-neuron parameter only through the neuron's own value (``check_locality``), so that
    block is diagonal: one backward pass of their sum; its columns for the shared parameters
    are Jacobian-vector products."""
    sizes = [parameter.numel() for parameter in parameters]
    starts = [0, *itertools.accumulate(sizes)][:-1]
    entries, first = Entries(), 0
    for error in errors:
        if error.requires_grad and error.dim() == 0:
            gradients = torch.autograd.grad(error, parameters, retain_graph=True, allow_unused=True)
            for start, size, gradient in zip(starts, sizes, gradients, strict=True):
                entries.add(first, start + torch.arange(size, device=error.device), gradient)
        elif error.requires_grad:  # (a target no tuned parameter reaches has no entries)
            neuron_rows(error, first, parameters, starts, local, check_locality, entries)
        first += error.numel()
    return entries.matrix((first, sum(sizes)), parameters[0].device)


def neuron_rows(
    error: torch.Tensor,
    first: int,
    parameters: list[torch.Tensor],
    starts: list[int],
    local: list[bool],
    check_locality: LocalityCheck,
    entries: Entries,
) -> None:
    """The rows ``first …`` of a per-neuron target's ``error`` [N]: a diagonal block for
    every per-neuron parameter (one backward pass, its locality checked) and a column of
    Jacobian-vector products for every value of a shared one."""
    neurons = torch.arange(error.numel(), device=error.device)
    own = [parameter for parameter, is_local in zip(parameters, local, strict=True) if is_local]
    if own:
        diagonals = torch.autograd.grad(error.sum(), own, retain_graph=True, allow_unused=True)
        check_locality(error, own, diagonals)
        own_starts = [s for s, is_local in zip(starts, local, strict=True) if is_local]
        for start, diagonal in zip(own_starts, diagonals, strict=True):
            entries.add(first + neurons, start + neurons, diagonal)
    shared = [
        (p, s) for p, s, is_local in zip(parameters, starts, local, strict=True) if not is_local
    ]
    if not shared:
        return
    probe, products = vector_jacobian([p for p, _ in shared], error)
    for (parameter, start), product in zip(shared, products, strict=True):
        for j, tangent in enumerate(torch.eye(parameter.numel(), device=error.device)):
            entries.add(
                first + neurons,
                start + j,
                jacobian_vector(probe, [product], [tangent.view_as(parameter)]),
            )
