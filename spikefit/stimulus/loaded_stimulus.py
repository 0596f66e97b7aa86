from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from spikefit.checks import InputError, field_name, finite
from spikefit.files import load_tensor
from spikefit.stimulus.base_stimulus import BaseStimulus

_EXPECTED = "a non-empty [N, steps] or [N, steps, n_networks] tensor of finite numbers"


def _load(field: str, source: str | Path | Tensor) -> Tensor:
    """The table [N, steps] or [N, steps, n_networks] as floats; errors name ``field`` for a
    tensor and the file for a path."""
    if isinstance(source, Tensor):
        values = source
    else:
        path = Path(source)
        field = str(path)
        if path.suffix not in (".pt", ".npy"):
            raise InputError(
                field,
                f"a {path.suffix or 'suffix-less'} file",
                f"a .pt or .npy file holding {_EXPECTED}",
            )
        values = load_tensor(path, _EXPECTED)
    if values.dim() not in (2, 3) or values.numel() == 0:
        raise InputError(field, f"a tensor of shape {list(values.shape)}", _EXPECTED)
    return finite(field, values.float())


class LoadedStimulus(BaseStimulus):
    r"""A recorded or planned stimulus, given as a table of values per neuron and step.

    .. math::
        \mathcal{E}_i(t) = S_{i, t} \quad \text{for } 0 \le t < \text{steps},
        \qquad 0 \text{ otherwise}

    With a ``[N, steps, n_networks]`` source, each network (all of ``N`` neurons) gets its own
    table; consecutive networks are grouped into batches of ``batch_size`` as in
    :class:`BaseStimulus`. Non-integer times are rounded down to their step.

    Args:
        source (str, Path or Tensor): the table, or a ``.pt`` (tensor, loaded with
            ``weights_only=True``) or ``.npy`` file holding it.
        batch_size (int, optional): networks per batch. (default: :obj:`1`)
    """

    def __init__(self, source: str | Path | Tensor, batch_size: int = 1) -> None:
        values = _load(field_name(self, "source"), source)
        if values.dim() == 2:
            values = values.unsqueeze(2)
        n_neurons, steps, n_networks = values.shape
        super().__init__(torch.ones(n_networks, n_neurons), batch_size)
        self.n_steps = steps
        self.register_buffer("source", values.permute(2, 0, 1).reshape(-1, steps))

    def forward(self, t: float | Tensor) -> Tensor:
        """Stimulus of the current batch at time ``t`` (in steps): ``[N]`` for a scalar time,
        ``[N, len(t)]`` for a 1-D tensor of times."""
        table = torch.split(self.source, self.split_sizes)[self.current_batch]
        t = torch.as_tensor(t, device=table.device)
        if t.dim() > 1:
            raise ValueError(f"t must be a scalar or a 1-D tensor, got shape {list(t.shape)}")
        step = t.floor().long() if t.is_floating_point() else t.long()
        inside = (step >= 0) & (step < self.n_steps)
        return table[:, step.clamp(0, self.n_steps - 1)] * inside
