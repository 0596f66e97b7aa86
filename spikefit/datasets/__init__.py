from spikefit.datasets.connectivity_dataset import ConnectivityDataset
from spikefit.datasets.generators import (
    ConnectivityGenerator,
    MexicanHatGenerator,
    NormalGenerator,
    UniformGenerator,
)
from spikefit.datasets.graph import dense_to_graph, graph_to_dense, load_network, save_network

__all__ = [
    "ConnectivityDataset",
    "ConnectivityGenerator",
    "NormalGenerator",
    "UniformGenerator",
    "MexicanHatGenerator",
    "dense_to_graph",
    "graph_to_dense",
    "load_network",
    "save_network",
]
