"""Reading tensors from user files without running code from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from spikefit.checks import InputError


def load_file(path: Path, expected: str, map_location: str | torch.device = "cpu") -> object:
    """What a ``.pt`` file (``torch.load(weights_only=True)``: tensors and plain containers
    only) or a ``.npy`` file (no pickles) holds, read without running code from it.

    Raises :class:`InputError` with ``path`` as the field and the ``expected`` content when the
    file cannot be read or holds objects that only running code could rebuild.
    """
    pt = path.suffix != ".npy"
    try:
        return (
            torch.load(path, weights_only=True, map_location=map_location)
            if pt
            else torch.from_numpy(np.load(path, allow_pickle=False))
        )
    except OSError as error:  # missing, a folder, no permission
        raise InputError(
            str(path), f"could not be read: {error.strerror or error}", expected
        ) from None
    except Exception as error:  # torch's and numpy's messages span lines: one line here
        how = (
            "with torch.load(weights_only=True), which runs no code from a file"
            if pt
            else "as a NumPy array without pickles"
        )
        raise InputError(
            str(path), f"could not be loaded {how}: {type(error).__name__}", expected
        ) from None


def load_tensor(path: Path, expected: str) -> Tensor:
    """A real tensor from a ``.pt`` or ``.npy`` file (:func:`load_file`); an InputError
    naming ``path`` and the ``expected`` content for anything else."""
    value = load_file(path, expected)
    if not isinstance(value, Tensor) or value.is_complex():
        kind = "a complex tensor" if isinstance(value, Tensor) else f"a {type(value).__name__}"
        raise InputError(str(path), f"holds {kind}", expected)
    return value
