import math
import re

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from spikefit.checks import InputError
from spikefit.datasets import (
    ConnectivityDataset,
    MexicanHatGenerator,
    NormalGenerator,
    UniformGenerator,
    dense_to_graph,
    graph_to_dense,
)


def off_diagonal(W):
    return W[~torch.eye(W.shape[0], dtype=torch.bool)]


# --- graph helpers --------------------------------------------------------------------------


def test_dense_to_graph_by_hand():
    W = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, -1.0], [3.0, 0.0, 0.0]], dtype=torch.float64)
    data = dense_to_graph(W)
    assert data.edge_index.tolist() == [[0, 1, 2], [1, 2, 0]]  # [pre, post]
    assert data.W0.tolist() == [2.0, -1.0, 3.0] and data.W0.dtype == torch.float32
    assert data.num_nodes == 3
    assert torch.equal(graph_to_dense(data), W.float())
    with pytest.raises(ValueError, match="square"):
        dense_to_graph(torch.ones(2, 3))


def test_graph_to_dense_of_a_batch_is_block_diagonal():
    W1 = torch.tensor([[0.0, 1.0], [-2.0, 0.0]])
    W2 = torch.tensor([[0.0, 0.0, 4.0], [5.0, 0.0, 0.0], [0.0, 6.0, 0.0]])
    batch = Batch.from_data_list([dense_to_graph(W1), dense_to_graph(W2)])
    assert torch.equal(graph_to_dense(batch), torch.block_diag(W1, W2))


# --- NormalGenerator ------------------------------------------------------------------------


def test_normal_dales_law_and_diagonal():
    W = NormalGenerator(50, mean=0.0, std=1.0, seed=0).generate_W0()
    assert W.shape == (50, 50) and W.dtype == torch.float32
    assert (W[:25] >= 0).all() and (W[25:] <= 0).all()
    assert (W[:25] > 0).any() and (W[25:] < 0).any()
    assert (W.diagonal() == 0).all()


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_normal_sparsity(sparsity):
    W = NormalGenerator(200, mean=0.0, std=1.0, sparsity=sparsity, seed=1).generate_W0()
    # 39 800 off-diagonal entries: standard error of the fraction < 0.003.
    assert (off_diagonal(W) == 0).float().mean().item() == pytest.approx(sparsity, abs=0.015)


@pytest.mark.parametrize("glorot, scale", [(False, 3.0), (True, 3.0 / 20)])
def test_normal_scale(glorot, scale):
    # With mean 0 the kept magnitudes are half-normal with sigma = scale:
    # E|X| = sigma sqrt(2/pi), Var|X| = sigma^2 (1 - 2/pi).
    W = NormalGenerator(400, mean=0.0, std=3.0, glorot=glorot, seed=2).generate_W0()
    magnitudes = W[W != 0].abs()
    assert magnitudes.mean().item() == pytest.approx(scale * math.sqrt(2 / math.pi), rel=0.02)
    assert magnitudes.std().item() == pytest.approx(scale * math.sqrt(1 - 2 / math.pi), rel=0.02)


def test_normal_reproducible_without_global_rng():
    state = torch.get_rng_state()
    a = NormalGenerator(20, 0.0, 1.0, seed=3)
    b = NormalGenerator(20, 0.0, 1.0, seed=3)
    c = NormalGenerator(20, 0.0, 1.0, rng=torch.Generator().manual_seed(3))
    first = a.generate_W0()
    assert torch.equal(first, b.generate_W0()) and torch.equal(first, c.generate_W0())
    assert not torch.equal(first, a.generate_W0())
    assert not torch.equal(first, NormalGenerator(20, 0.0, 1.0, seed=4).generate_W0())
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_neurons": 5}, "even"),
        ({"n_neurons": 0}, "n_neurons"),
        ({"sparsity": 0.4}, "Dale"),
        ({"sparsity": 1.1}, "sparsity"),
        ({"mean": math.nan}, "mean"),
        ({"std": -1.0}, "std"),
    ],
)
def test_normal_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NormalGenerator(**{"n_neurons": 10, "mean": 0.0, "std": 1.0, **kwargs})


BAD_GENERATOR_ARGUMENTS = [  # (class, valid arguments, argument, bad value)
    (NormalGenerator, {"n_neurons": 10, "mean": 0.0, "std": 1.0}, "n_neurons", 5),
    (NormalGenerator, {"n_neurons": 10, "mean": 0.0, "std": 1.0}, "n_neurons", 0),
    (NormalGenerator, {"n_neurons": 10, "mean": 0.0, "std": 1.0}, "n_neurons", 10.5),
    (NormalGenerator, {"n_neurons": 10, "mean": 0.0, "std": 1.0}, "mean", math.inf),
    (NormalGenerator, {"n_neurons": 10, "mean": 0.0, "std": 1.0}, "std", -1.0),
    (NormalGenerator, {"n_neurons": 10, "mean": 0.0, "std": 1.0}, "sparsity", 0.4),
    (NormalGenerator, {"n_neurons": 10, "mean": 0.0, "std": 1.0}, "sparsity", math.nan),
    (NormalGenerator, {"n_neurons": 10, "mean": 0.0, "std": 1.0}, "glorot", "yes"),
    (NormalGenerator, {"n_neurons": 10, "mean": 0.0, "std": 1.0}, "seed", -3),
    (UniformGenerator, {"n_neurons": 4, "low": 0.0, "high": 1.0, "sparsity": 0.5}, "n_neurons", 0),
    (UniformGenerator, {"n_neurons": 4, "low": 0.0, "high": 1.0, "sparsity": 0.5}, "low", "0"),
    (UniformGenerator, {"n_neurons": 4, "low": 0.0, "high": 1.0, "sparsity": 0.5}, "high", 0.0),
    (UniformGenerator, {"n_neurons": 4, "low": 0.0, "high": 1.0, "sparsity": 0.5}, "sparsity", 1.5),
    (UniformGenerator, {"n_neurons": 4, "low": 0.0, "high": 1.0, "sparsity": 0.5}, "seed", 0.5),
    (
        MexicanHatGenerator,
        {"n_neurons": 10, "a": 0.5, "sigma_1": 1.0, "sigma_2": 2.0},
        "n_neurons",
        -1,
    ),
    (
        MexicanHatGenerator,
        {"n_neurons": 10, "a": 0.5, "sigma_1": 1.0, "sigma_2": 2.0},
        "a",
        math.nan,
    ),
    (
        MexicanHatGenerator,
        {"n_neurons": 10, "a": 0.5, "sigma_1": 1.0, "sigma_2": 2.0},
        "sigma_1",
        0.0,
    ),
    (
        MexicanHatGenerator,
        {"n_neurons": 10, "a": 0.5, "sigma_1": 1.0, "sigma_2": 2.0},
        "sigma_2",
        -2.0,
    ),
]


@pytest.mark.parametrize(
    "generator_class, arguments, name, value",
    BAD_GENERATOR_ARGUMENTS,
    ids=[f"{c.__name__}.{n}={v}" for c, _, n, v in BAD_GENERATOR_ARGUMENTS],
)
def test_bad_generator_arguments_name_the_argument(generator_class, arguments, name, value):
    with pytest.raises(InputError) as error:
        generator_class(**{**arguments, name: value})
    assert str(error.value).startswith(f"{generator_class.__name__}.{name}: ")
    assert "(expected" in str(error.value)


@pytest.mark.parametrize("n", [0, 2.5])
def test_bad_network_counts_name_n(tmp_path, n):
    generator = UniformGenerator(4, 0.0, 1.0, 0.5, seed=0)
    for make in (lambda: generator.generate(n), lambda: generator.save(n, tmp_path)):
        with pytest.raises(InputError, match=r"^UniformGenerator\.n: .*\(expected"):
            make()
    assert not list(tmp_path.iterdir())


def test_generate_gives_graphs():
    graphs = NormalGenerator(10, 0.0, 1.0, seed=0).generate(3)
    assert len(graphs) == 3
    for data in graphs:
        assert data.num_nodes == 10 and data.edge_index.shape == (2, data.W0.numel())
        assert (data.edge_index[0] != data.edge_index[1]).all()
        assert (data.W0 != 0).all()


# --- UniformGenerator and MexicanHatGenerator -----------------------------------------------


def test_uniform():
    W = UniformGenerator(200, low=-1.0, high=2.0, sparsity=0.3, seed=0).generate_W0()
    values = off_diagonal(W)
    assert (W.diagonal() == 0).all()
    assert (values == 0).float().mean().item() == pytest.approx(0.3, abs=0.015)
    nonzero = values[values != 0]
    assert nonzero.min() >= -1.0 and nonzero.max() < 2.0
    assert nonzero.mean().item() == pytest.approx(0.5, abs=0.03)  # (low + high) / 2
    for kwargs in ({"low": 1.0, "high": 1.0}, {"sparsity": -0.1}, {"sparsity": 1.5}):
        with pytest.raises(ValueError):
            UniformGenerator(**{"n_neurons": 4, "low": 0.0, "high": 1.0, "sparsity": 0.5, **kwargs})


def test_mexican_hat_on_a_ring():
    W = MexicanHatGenerator(10, a=0.5, sigma_1=1.0, sigma_2=2.0).generate_W0()

    def hat(d):
        return math.exp(-(d**2) / 2) - 0.5 * math.exp(-(d**2) / 8)

    assert W[0, 1].item() == pytest.approx(hat(1))
    assert W[0, 9].item() == pytest.approx(hat(1))  # neighbours across the ring
    assert W[3, 7].item() == pytest.approx(hat(4))
    assert W[8, 2].item() == pytest.approx(hat(4))
    assert W[0, 5].item() == pytest.approx(hat(5))
    assert (W.diagonal() == 0).all() and torch.equal(W, W.t())
    with pytest.raises(ValueError, match="sigma"):
        MexicanHatGenerator(10, 0.5, 0.0, 2.0)


# --- saving and loading ---------------------------------------------------------------------


def test_save_and_load_round_trip_in_numeric_order(tmp_path):
    twin = NormalGenerator(8, 0.0, 1.0, seed=5)
    expected = [twin.generate_W0() for _ in range(12)]
    directory = NormalGenerator(8, 0.0, 1.0, seed=5).save(12, tmp_path / "a" / "b")
    assert directory == tmp_path / "a" / "b"
    dataset = ConnectivityDataset(directory)
    assert len(dataset) == 12
    assert [p.name for p in dataset.files][:3] == ["0.pt", "1.pt", "2.pt"]
    for i in (0, 2, 10, 11):
        assert torch.equal(graph_to_dense(dataset[i]), expected[i])
    assert torch.equal(torch.load(directory / "10.pt"), expected[10])


def test_mixed_pt_and_npy_order(tmp_path):
    def matrix(k):
        return torch.tensor([[0.0, k], [-k, 0.0]])

    torch.save(matrix(1.0), tmp_path / "0.pt")
    np.save(tmp_path / "1.npy", matrix(2.0).numpy())
    torch.save(matrix(3.0), tmp_path / "2.pt")
    np.save(tmp_path / "10.npy", matrix(4.0).double().numpy())
    torch.save(matrix(5.0), tmp_path / "11.pt")
    np.save(tmp_path / "extra.npy", matrix(6.0).numpy())
    (tmp_path / "notes.txt").write_text("ignored")
    dataset = ConnectivityDataset(tmp_path)
    assert [p.name for p in dataset.files] == [
        "0.pt",
        "1.npy",
        "2.pt",
        "10.npy",
        "11.pt",
        "extra.npy",
    ]
    for i, data in enumerate(dataset):
        assert torch.equal(graph_to_dense(data), matrix(i + 1.0))
    batch = dataset.combine_all()
    assert batch.num_graphs == 6 and batch.num_nodes == 12
    blocks = [matrix(k + 1.0) for k in range(6)]
    assert torch.equal(graph_to_dense(batch), torch.block_diag(*blocks))
    assert [b.num_graphs for b in DataLoader(dataset, batch_size=4)] == [4, 2]


def snapshot(directory):
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_save_twice_is_idempotent(tmp_path):
    """The README's quick start, run twice in the same folder."""
    directory = tmp_path / "w0"
    NormalGenerator(50, mean=0, std=5, glorot=True, seed=14071789).save(10, directory)
    first = snapshot(directory)
    assert sorted(first) == sorted(f"{i}.pt" for i in range(10))  # no .partial left over
    NormalGenerator(50, mean=0, std=5, glorot=True, seed=14071789).save(10, directory)
    assert snapshot(directory) == first
    assert len(ConnectivityDataset(directory)) == 10


def test_save_adds_the_missing_files_of_the_same_generator(tmp_path):
    UniformGenerator(4, 0.0, 1.0, 0.5, seed=0).save(2, tmp_path)
    before = snapshot(tmp_path)
    UniformGenerator(4, 0.0, 1.0, 0.5, seed=0).save(3, tmp_path)
    after = snapshot(tmp_path)
    assert {name: after[name] for name in before} == before and "2.pt" in after
    expected = UniformGenerator(4, 0.0, 1.0, 0.5, seed=0).generate(3)[2]
    assert torch.equal(torch.load(tmp_path / "2.pt"), graph_to_dense(expected))


@pytest.mark.parametrize("change", ["seed", "dtype", "garbage"])
def test_save_refuses_other_files_and_writes_nothing(tmp_path, change):
    NormalGenerator(20, 0.0, 1.0, seed=1).save(3, tmp_path)
    (tmp_path / "2.pt").unlink()  # missing, yet not written since another file differs
    if change == "dtype":
        torch.save(torch.load(tmp_path / "1.pt").double(), tmp_path / "1.pt")
    elif change == "garbage":
        (tmp_path / "1.pt").write_bytes(b"not a tensor")
    before = snapshot(tmp_path)
    seed = 2 if change == "seed" else 1
    with pytest.raises(FileExistsError) as error:
        NormalGenerator(20, 0.0, 1.0, seed=seed).save(3, tmp_path)
    assert error.value.filename == str(tmp_path / ("0.pt" if change == "seed" else "1.pt"))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["square.pt", "nan.npy", "garbage.pt", "flat.npy", "dict.pt"])
def test_bad_matrix_files(tmp_path, name):
    torch.save(torch.zeros(2, 2), tmp_path / "0.pt")
    bad = tmp_path / name
    if name == "square.pt":
        torch.save(torch.ones(2, 3), bad)
    elif name == "nan.npy":
        np.save(bad, np.array([[0.0, np.nan], [1.0, 0.0]]))
    elif name == "garbage.pt":
        bad.write_bytes(b"\x00\x01 definitely not a tensor")
    elif name == "flat.npy":
        np.save(bad, np.ones(4))
    else:
        torch.save({"W0": torch.ones(2, 2)}, bad)
    expected = r"\(expected a square \[N, N\] matrix of finite weights indexed \[pre, post\]\)"
    with pytest.raises(InputError, match=rf"^{re.escape(str(bad))}: .*{expected}$"):
        ConnectivityDataset(tmp_path)


def test_bad_roots(tmp_path):
    missing = re.escape(str(tmp_path / "missing"))
    with pytest.raises(InputError, match=rf"^{missing}: no such directory \(expected"):
        ConnectivityDataset(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("no matrices here")
    with pytest.raises(InputError, match=rf"^{re.escape(str(tmp_path))}: no .pt or .npy files"):
        ConnectivityDataset(tmp_path)


def test_self_loops_dropped_with_warning(tmp_path):
    torch.save(torch.tensor([[1.0, 2.0], [3.0, 0.0]]), tmp_path / "0.pt")
    with pytest.warns(UserWarning, match="0.pt"):
        dataset = ConnectivityDataset(tmp_path)
    assert dataset[0].edge_index.tolist() == [[0, 1], [1, 0]]
    assert torch.equal(graph_to_dense(dataset[0]), torch.tensor([[0.0, 2.0], [3.0, 0.0]]))
