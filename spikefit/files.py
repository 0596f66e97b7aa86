"""Reading tensors from user files without running code from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def load_tensor(path: Path, expected: str) -> Tensor:
    """A real tensor from a ``.pt`` (``weights_only=True``) or ``.npy`` (no pickles) file.

    Raises ValueError naming ``path`` and the ``expected`` content when the file cannot be read
    or holds something other than a real tensor.
    """
    try:
        if path.suffix == ".pt":
            value = torch.load(path, weights_only=True)
        else:
            value = torch.from_numpy(np.load(path, allow_pickle=False))
    except Exception as error:
        raise ValueError(f"{path}: could not read {expected} ({error})") from None
    if not isinstance(value, Tensor) or value.is_complex():
        raise ValueError(f"{path}: expected {expected}, got {type(value).__name__}")
    return value
