from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from spikefit.checks import InputError, field_name, finite, whole

#: Stimulus masks: one 1-D mask, a [n_networks, N] tensor, or a list of 1-D masks (tensors or
#: lists of 0/1 values, as written in a YAML config).
Masks = Tensor | Sequence[Tensor] | Sequence[Sequence[float]]

_MASKS = "a 1-D mask, a [n_networks, N] tensor or a list of non-empty 1-D masks of bool or 0/1"


def _mask_list(field: str, stimulus_masks: Masks) -> list[Tensor]:
    """The masks as float tensors, one per network; ``field`` names them in errors."""
    if isinstance(stimulus_masks, Tensor):
        if stimulus_masks.dim() not in (1, 2):
            raise InputError(field, f"a tensor of shape {list(stimulus_masks.shape)}", _MASKS)
        masks = [stimulus_masks] if stimulus_masks.dim() == 1 else list(stimulus_masks)
    else:
        masks = [torch.as_tensor(mask) for mask in stimulus_masks]
    if not masks:
        raise InputError(field, "no masks", _MASKS)
    for i, mask in enumerate(masks):
        if mask.dim() != 1 or mask.numel() == 0:
            raise InputError(field, f"mask {i} has shape {list(mask.shape)}", _MASKS)
        finite(f"{field}[{i}]", mask)
    return [mask.float() for mask in masks]


class BaseStimulus(nn.Module):
    r"""Base class of external stimuli :math:`\mathcal{E}_i(t)` that follow the network batches.

    A stimulus is a time course :math:`f(t)` (:meth:`time_course`) applied to the neurons
    selected by a mask :math:`m_i`:

    .. math::
        \mathcal{E}_i(t) = f(t) \, m_i

    Masks are given per network, as a 1-D mask (one network), a ``[n_networks, N]`` tensor or a
    list of 1-D masks (networks may differ in size). Consecutive networks are grouped into
    batches of ``batch_size``, and the mask of a batch is the concatenation of its networks'
    masks, matching the node order of a PyG ``DataLoader`` batch of the same networks.

    Args:
        stimulus_masks (Tensor or list[Tensor]): bool or 0/1 masks of the stimulated neurons.
        batch_size (int, optional): networks per batch. (default: :obj:`1`)
    """

    def __init__(self, stimulus_masks: Masks, batch_size: int = 1) -> None:
        super().__init__()
        masks = _mask_list(field_name(self, "stimulus_masks"), stimulus_masks)
        field = field_name(self, "batch_size")
        self.batch_size = whole(field, batch_size, minimum=1, unit="of networks")
        if self.batch_size > len(masks):
            raise InputError(
                field,
                f"{self.batch_size} is out of range",
                f"a whole number of networks from 1 to {len(masks)}, one mask each",
            )
        self.split_sizes = [
            sum(mask.numel() for mask in masks[i : i + self.batch_size])
            for i in range(0, len(masks), self.batch_size)
        ]
        self.register_buffer("concatenated_masks", torch.cat(masks))
        self._idx = 0

    @property
    def n_batches(self) -> int:
        """Number of network batches."""
        return len(self.split_sizes)

    @property
    def current_batch(self) -> int:
        """Index of the batch the stimulus currently applies to."""
        return self._idx

    @property
    def stimulus_masks(self) -> tuple[Tensor, ...]:
        """The float mask of every batch."""
        return torch.split(self.concatenated_masks, self.split_sizes)

    @property
    def mask(self) -> Tensor:
        """Float mask ``[N_batch]`` of the current batch."""
        return self.stimulus_masks[self._idx]

    @property
    def n_neurons(self) -> int:
        """Number of neurons in the current batch."""
        return self.split_sizes[self._idx]

    def next_batch(self) -> None:
        """Move on to the next batch (after the last one, back to the first)."""
        self._idx = (self._idx + 1) % self.n_batches

    def set_batch(self, idx: int) -> None:
        """Apply the stimulus to batch ``idx``."""
        if not 0 <= idx < self.n_batches:
            raise ValueError(f"batch index must be in [0, {self.n_batches}), got {idx}")
        self._idx = int(idx)

    def reset(self) -> None:
        """Go back to the first batch."""
        self._idx = 0

    def time_course(self, t: Tensor) -> Tensor:
        """Stimulus value :math:`f(t)` at times ``t`` (in steps), same shape as ``t``."""
        raise NotImplementedError

    def forward(self, t: float | Tensor) -> Tensor:
        """Stimulus of the current batch at time ``t`` (in steps): ``[N]`` for a scalar time,
        ``[N, len(t)]`` for a 1-D tensor of times."""
        mask = self.mask
        t = torch.as_tensor(t, device=mask.device)
        if t.dim() > 1:
            raise ValueError(f"t must be a scalar or a 1-D tensor, got shape {list(t.shape)}")
        value = self.time_course(t).to(mask.dtype)
        return value * mask if t.dim() == 0 else mask.unsqueeze(1) * value
