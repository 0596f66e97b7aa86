"""Checkpoints of spikefit tasks: what they record, and checks before one is restored."""

from __future__ import annotations

from collections.abc import Iterable

import lightning as L
import torch

from spikefit.checks import InputError


def stamp(checkpoint: dict, module: L.LightningModule, **state) -> None:
    """Records in ``checkpoint`` the task that wrote it and the task's ``state``."""
    checkpoint["spikefit"] = {"task": type(module).__name__, **state}


def match_state(module: L.LightningModule, checkpoint: dict, resizable: Iterable[str] = ()) -> dict:
    """Checks that ``checkpoint`` holds the parameters and buffers of ``module``, resizing
    the ``resizable`` parameters (per-neuron values) to their checkpointed shape; returns
    the task state that :func:`stamp` recorded. Raises an InputError naming ``ckpt_path``."""
    saved, own = checkpoint.get("state_dict", {}), module.state_dict()
    for name in resizable:
        if name in saved and name in own:
            parameter = module.get_parameter(name)
            parameter.data = torch.empty_like(saved[name], device=parameter.device)
    own = module.state_dict()
    differ = sorted(set(saved) ^ set(own)) or [
        name for name in own if own[name].shape != saved[name].shape
    ]
    if differ:
        raise InputError(
            "ckpt_path",
            f"the checkpoint does not fit this run's "
            f"{type(module).__name__} ({', '.join(differ[:4])} differ)",
            "a checkpoint of a run with the same model and settings",
        )
    return checkpoint.get("spikefit", {})
