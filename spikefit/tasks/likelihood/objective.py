"""The likelihood of a chunk of recorded bins under teacher forcing, and the pieces of its
gradient: the inputs, the step's cache of traces and targets, and the link's derivatives."""

from __future__ import annotations

import math

import torch
from torch_geometric.data import Data

from spikefit.data.spike_trains import Chunk
from spikefit.models import BaseModel
from spikefit.models.emissions import Emission, at_spikes

#: A chunk's spike traces (as :meth:`~spikefit.models.BaseModel.spike_traces`; None where
#: they depend on fitted parameters) and its sparse target counts [S, N].
Prepared = tuple[tuple | None, torch.Tensor]


def targets_of(chunk: Chunk) -> torch.Tensor:
    """The counts [S, N] of the chunk's last S bins (the ones it evaluates)."""
    return chunk["spikes"][:, -chunk["bins"] :].t()


def forced_input(
    model: BaseModel,
    chunk: Chunk,
    network: Data | None,
    coupling: torch.Tensor | None,
    self_scale: torch.Tensor | None,
    traces: tuple | None = None,
) -> torch.Tensor:
    """The teacher-forced input g [S, N] of the chunk's last S bins, given the recorded
    history, coupled by the ``network``'s weights or the dense ``coupling`` [B·N, N] and with
    the self kernel scaled by ``self_scale`` [N], plus the model's covariate input of the
    chunk's ``covariates`` (if any); ``traces`` are the chunk's
    :meth:`~spikefit.models.BaseModel.spike_traces`, if known."""
    spikes, bins = chunk["spikes"].unsqueeze(0), chunk["bins"]
    if traces is None:
        traces = model.spike_traces(spikes)
    traces = tuple(None if t is None else t[..., -bins:] for t in traces)
    first = chunk["start"] + spikes.shape[-1] - bins
    g = model.input_from_spikes(
        network,
        spikes[..., -bins:],
        start=first,
        coupling=coupling,
        self_scale=self_scale,
        traces=traces,
    )
    covariates = chunk.get("covariates")
    drive = None if covariates is None else model.covariate_input(covariates.unsqueeze(0))
    if drive is not None:
        g = g + drive[..., -bins:]
    return g[0].t()


def time_major(trace: torch.Tensor) -> torch.Tensor:
    """``trace`` [K, N, S] stored with the neurons of a step next to each other."""
    return trace.transpose(-1, -2).contiguous().transpose(-1, -2)


class StepCache:
    """Each chunk's spike traces and sparse target counts, computed on first use and kept
    for the step's later evaluations, unless they depend on fitted (kernel) parameters: the
    presynaptic traces time-major, as the products with the coupling read them, the own
    traces as they are, as the self kernel's weights read them. Newton's solvers keep their
    designs of the chunks in ``designs`` and the chunks' sums that do not change from one
    iteration to the next in ``spectrum``
    (:func:`~spikefit.tasks.likelihood.newton.newton_system`). What is kept stays within
    ``budget`` bytes: the chunks beyond it are computed again at every use (bounded memory,
    slower).

    Args:
        model: the fitted model.
        batch: the step's chunks.
        budget: most bytes of traces and designs kept.
    """

    def __init__(self, model: BaseModel, batch: list[Chunk], budget: float = math.inf) -> None:
        self.model, self.batch = model, batch
        self.prepared: dict[int, Prepared] = {}
        self.designs: dict[int, object] = {}
        self.spectrum: dict[str, tuple[torch.Tensor, ...]] = {}
        self.budget, self.kept_bytes = budget, 0

    def keep(self, store: dict, k: int, value: object, tensors: list[torch.Tensor | None]) -> None:
        """Puts ``value`` in ``store`` under ``k`` if its ``tensors`` fit in the budget."""
        size = sum(t.numel() * t.element_size() for t in tensors if t is not None)
        if self.kept_bytes + size <= self.budget:
            store[k] = value
            self.kept_bytes += size

    def __call__(self, k: int) -> Prepared:
        """Chunk k's traces and targets."""
        if k in self.prepared:
            return self.prepared[k]
        chunk = self.batch[k]
        traces = self.model.spike_traces(chunk["spikes"].unsqueeze(0))
        fixed = not any(t is not None and t.requires_grad for t in traces)
        prepared = (
            ((time_major(traces[0]), traces[1]) if fixed else None),
            targets_of(chunk).to_sparse().coalesce(),
        )
        self.keep(self.prepared, k, prepared, list(prepared[0] or ()))
        return prepared


def link_derivatives(
    observation: Emission, targets: torch.Tensor, link: torch.Tensor
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Derivatives of the negative log-likelihood in the likelihood parameter m [S, N] of a
    chunk with sparse ``targets``: the first everywhere (1 where no spike, as every emission
    has log P(0 | m) = -m), the spikes' index and the second there (0 elsewhere)."""
    counts, fired = at_spikes(targets, link.detach())
    first, second = observation.spike_link_derivatives(counts, fired)
    index = tuple(targets.indices())
    gradient = torch.ones_like(link, requires_grad=False)
    gradient[index] = -first
    return gradient, index, -second


def surrogate(observation: Emission, targets: torch.Tensor, link: torch.Tensor) -> torch.Tensor:
    """A scalar whose gradient is that of the chunk's negative log-likelihood, from its
    exact derivatives in the link output m (:func:`link_derivatives`), so that the backward
    pass runs through m alone."""
    return (link * link_derivatives(observation, targets, link)[0]).sum()
