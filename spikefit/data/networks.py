"""LightningDataModule serving connectivity networks, generated or loaded from a folder."""

from __future__ import annotations

import lightning as L
from jsonargparse import lazy_instance
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from spikefit.checks import InputError, whole
from spikefit.datasets import (
    ConnectivityDataset,
    ConnectivityGenerator,
    NormalGenerator,
    load_network,
)

#: The seed introduction's networks: 50 neurons, Dale's law, N(0, 5²/50) weights.
DEFAULT_GENERATOR = lazy_instance(
    NormalGenerator, n_neurons=50, mean=0.0, std=5.0, glorot=True, seed=0
)


class NetworkDataModule(L.LightningDataModule):
    """Networks for calibration: ``n_networks`` drawn from ``generator``, every matrix of a
    :class:`ConnectivityDataset` folder ``root``, or the one network of a network file
    ``network`` (a fit's ``fitted_network.pt``).

    Each batch is one PyG batch of ``batch_size`` networks (one disjoint graph); under DDP
    Lightning's distributed sampler gives every process its own networks.

    Args:
        generator: connectivity generator (default: NormalGenerator, 50 neurons, glorot std 5).
        n_networks: networks to generate.
        root: folder of ``.pt``/``.npy`` connectivity matrices (used instead of generating).
        network: a network file (:func:`~spikefit.datasets.load_network`, a fit's
            ``fitted_network.pt``; used instead of generating).
        batch_size: networks per batch.
    """

    def __init__(
        self,
        generator: ConnectivityGenerator = DEFAULT_GENERATOR,
        n_networks: int = 10,
        root: str | None = None,
        network: str | None = None,
        batch_size: int = 10,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        whole(f"{owner}.n_networks", n_networks, 1)
        whole(f"{owner}.batch_size", batch_size, 1)
        if root is not None and network is not None:
            raise InputError(f"{owner}.network", "given together with root", "root or network")
        self.generator = generator
        self.n_networks = n_networks
        self.root = root
        self.network = network
        self.batch_size = batch_size
        self.networks: list[Data] = []

    def setup(self, stage: str | None = None) -> None:
        if self.networks:
            return
        if self.root is not None:
            self.networks = list(ConnectivityDataset(self.root))
        elif self.network is not None:
            self.networks = [load_network(self.network)]
        else:
            self.networks = self.generator.generate(self.n_networks)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.networks, batch_size=self.batch_size, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return self.train_dataloader()
