from __future__ import annotations

import warnings
from pathlib import Path

from torch import Tensor
from torch_geometric.data import Batch, Data

from spikefit.checks import InputError
from spikefit.datasets.graph import dense_to_graph
from spikefit.files import load_tensor

_EXPECTED = "a square [N, N] matrix of finite weights indexed [pre, post]"
_DIRECTORY = f"a directory of .pt or .npy files, each holding {_EXPECTED}"


def _file_order(path: Path) -> tuple[int, int, str]:
    """Integer names first, by value (2.pt before 10.pt), then the others by name."""
    stem = path.stem
    return (0, int(stem), path.name) if stem.isdecimal() else (1, 0, path.name)


def _load_matrix(path: Path) -> Tensor:
    """The float32 matrix of ``path``, its diagonal zeroed (with a warning)."""
    matrix = load_tensor(path, _EXPECTED)
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1] or matrix.numel() == 0:
        problem = "an empty matrix" if matrix.numel() == 0 else "not a square matrix"
        raise InputError(str(path), f"{problem}: shape {list(matrix.shape)}", _EXPECTED)
    matrix = matrix.float()
    if not bool(matrix.isfinite().all()):
        raise InputError(str(path), "holds NaN or infinite weights", _EXPECTED)
    n_loops = int(matrix.diagonal().count_nonzero())
    if n_loops:
        warnings.warn(
            f"{path}: dropped {n_loops} nonzero diagonal (self-loop) weight(s)", stacklevel=2
        )
        matrix = matrix.clone().fill_diagonal_(0)
    return matrix


class ConnectivityDataset:
    r"""Networks loaded from a directory of dense connectivity matrices.

    Every ``.pt`` (a tensor, loaded with ``weights_only=True``) and ``.npy`` file in
    :obj:`root` must hold a square matrix ``W0`` ``[N, N]`` indexed ``[pre, post]``. Files are
    read in numeric order (``2.pt`` before ``10.pt``; names that are not integers come last,
    by name), and each becomes ``Data(edge_index, W0, num_nodes)`` with one edge per nonzero
    weight. Nonzero diagonal weights (self-loops) are dropped with a warning.

    The dataset can be fed to a :class:`torch_geometric.loader.DataLoader` to simulate batches
    of networks as one disjoint graph.

    Args:
        root (str or Path): directory of the matrix files.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            problem = "not a directory" if self.root.exists() else "no such directory"
            raise InputError(str(self.root), problem, _DIRECTORY)
        self.files = sorted(
            (p for p in self.root.iterdir() if p.is_file() and p.suffix in (".pt", ".npy")),
            key=_file_order,
        )
        if not self.files:
            raise InputError(str(self.root), "no .pt or .npy files", _DIRECTORY)
        self.data = [dense_to_graph(_load_matrix(path)) for path in self.files]

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx: int) -> Data:
        return self.data[idx]

    def combine_all(self) -> Batch:
        """All networks as one batch (a disjoint union graph)."""
        return Batch.from_data_list(self.data)
