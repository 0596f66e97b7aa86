"""LightningDataModule serving connectivity networks, generated or loaded from a folder."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from spikefit.datasets import ConnectivityDataset, NormalGenerator


class NetworkDataModule(L.LightningDataModule):
    """Networks for calibration: ``n_networks`` NormalGenerator networks (Dale's law, glorot
    scaling, seeded), or every matrix of a :class:`ConnectivityDataset` folder ``root``.

    Each batch is one PyG batch of ``batch_size`` networks; under DDP Lightning's distributed
    sampler gives every process its own networks.

    Args:
        root: folder of ``.pt``/``.npy`` connectivity matrices (overrides generation).
        n_networks: networks to generate.
        n_neurons: neurons per generated network (even).
        mean: mean weight of the generator.
        std: weight standard deviation (divided by sqrt(n_neurons) when ``glorot``).
        sparsity: fraction of absent edges (0.5–1).
        glorot: glorot scaling of the weights.
        batch_size: networks per batch.
        seed: generator seed.
    """

    def __init__(self, root: str | None = None, n_networks: int = 10, n_neurons: int = 50,
                 mean: float = 0.0, std: float = 5.0, sparsity: float = 0.5,
                 glorot: bool = True, batch_size: int = 10, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.networks: list[Data] = []

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if hp.root is not None:
            if not Path(hp.root).is_dir():
                raise FileNotFoundError(f"data.root: {hp.root} is not a folder of connectivity "
                                        f"matrices (.pt/.npy)")
            self.networks = list(ConnectivityDataset(hp.root))
        else:
            generator = NormalGenerator(hp.n_neurons, hp.mean, hp.std, sparsity=hp.sparsity,
                                        glorot=hp.glorot, seed=hp.seed)
            self.networks = generator.generate(hp.n_networks)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.networks, batch_size=self.hparams.batch_size, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return self.train_dataloader()
