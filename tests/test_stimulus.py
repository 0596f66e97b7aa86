import math
import re

import numpy as np
import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from spikefit.checks import InputError
from spikefit.stimulus import LoadedStimulus, PoissonStimulus, RegularStimulus, SinStimulus


def on_times(stim, n_steps):
    """Times in [0, n_steps) at which the (single-neuron) stimulus is nonzero."""
    return torch.nonzero(stim(torch.arange(n_steps))[0]).flatten().tolist()


# --- RegularStimulus --------------------------------------------------------------------------


def test_regular_phase_counts_from_start():
    stim = RegularStimulus(2.0, period=10, tau=2, stop=25, stimulus_masks=torch.ones(1), start=3)
    # Pulses of 2 steps every 10 steps from t=3, none from t=25 on.
    assert on_times(stim, 40) == [3, 4, 13, 14, 23, 24]
    for t in (3, 4, 13, 14):
        assert stim(t).tolist() == [2.0]
    for t in (0, 2, 5, 12, 33, 34):
        assert stim(t).tolist() == [0.0]


def test_regular_mask_scalar_and_tensor_times():
    stim = RegularStimulus(1.5, 4, 1, 100, torch.tensor([True, False, True]))
    assert stim(8).tolist() == [1.5, 0.0, 1.5]
    assert stim(9.0).tolist() == [0.0, 0.0, 0.0]
    assert stim(torch.tensor(4)).tolist() == [1.5, 0.0, 1.5]
    times = torch.tensor([0, 1, 4, 6, 8, 99, 100])
    out = stim(times)
    assert out.shape == (3, 7) and out.dtype == torch.float32
    assert torch.equal(out, torch.stack([stim(t) for t in times.tolist()], dim=1))
    assert out[0].tolist() == [1.5, 0.0, 1.5, 0.0, 1.5, 0.0, 0.0]


def test_regular_float64_times_give_float32():
    stim = RegularStimulus(1.0, 4, 1, 100, torch.ones(2))
    assert stim(torch.tensor([0.0, 1.0], dtype=torch.float64)).dtype == torch.float32


def test_regular_strength_gradient():
    stim = RegularStimulus(2.0, 10, 2, 25, torch.tensor([1.0, 0.0, 1.0]), start=3)
    stim.strength.requires_grad_(True)
    stim(torch.arange(20)).sum().backward()
    # On at t = 3, 4, 13, 14 for 2 masked neurons.
    assert stim.strength.grad.item() == 8.0


# --- batching -------------------------------------------------------------------------------


def test_batches_of_masks():
    masks = [torch.tensor([1, 0]), torch.tensor([0, 1, 1]), torch.tensor([1.0, 1.0, 0.0, 0.0])]
    stim = RegularStimulus(1.0, 1, 1, 10, masks, batch_size=2)
    assert stim.n_batches == 2
    assert [m.tolist() for m in stim.stimulus_masks] == [[1, 0, 0, 1, 1], [1, 1, 0, 0]]
    assert stim.current_batch == 0 and stim.n_neurons == 5
    assert stim(0).tolist() == [1, 0, 0, 1, 1]
    stim.next_batch()
    assert stim.current_batch == 1 and stim.n_neurons == 4
    assert stim(0).tolist() == [1, 1, 0, 0]
    assert stim(torch.arange(3)).shape == (4, 3)
    stim.next_batch()
    assert stim.current_batch == 0
    stim.set_batch(1)
    assert stim.mask.tolist() == [1, 1, 0, 0]
    stim.reset()
    assert stim.current_batch == 0
    for bad in (2, -1):
        with pytest.raises(ValueError):
            stim.set_batch(bad)


def test_two_dimensional_masks_and_single_batch():
    masks = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    stim = SinStimulus(0.0, 10, 5, masks, baseline=1.0, batch_size=3)
    assert stim.n_batches == 1
    stim.next_batch()
    assert stim.current_batch == 0
    assert stim(0).tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 1]


def test_stimulus_batches_follow_dataloader_batches():
    sizes = [2, 3, 4, 5, 1]
    graphs = [
        Data(edge_index=torch.empty(2, 0, dtype=torch.long), num_nodes=n, idx=torch.tensor([i]))
        for i, n in enumerate(sizes)
    ]
    masks = [torch.arange(n) % 2 == 0 for n in sizes]
    stim = RegularStimulus(1.0, 1, 1, 10, masks, batch_size=2)
    batches = list(DataLoader(graphs, batch_size=2))
    assert stim.n_batches == len(batches) == 3
    for batch in batches:
        assert stim.n_neurons == batch.num_nodes
        expected = torch.cat([masks[i] for i in batch.idx.tolist()])
        assert torch.equal(stim(0), expected.float())
        stim.next_batch()


@pytest.mark.parametrize("batch_size", [0, 4, -1])
def test_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        RegularStimulus(1.0, 2, 1, 10, torch.ones(3, 4), batch_size=batch_size)


@pytest.mark.parametrize(
    "masks", [torch.ones(2, 2, 2), [], [torch.ones(2, 2)], [torch.tensor([1.0, math.nan])]]
)
def test_bad_masks(masks):
    with pytest.raises(ValueError):
        RegularStimulus(1.0, 2, 1, 10, masks)


# --- argument checks ------------------------------------------------------------------------

MASK = torch.ones(3)


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: RegularStimulus(1.0, -1, 1, 10, MASK), "RegularStimulus.period"),
        (lambda: RegularStimulus(1.0, 0, 1, 10, MASK), "RegularStimulus.period"),
        (lambda: RegularStimulus(1.0, 5, -1, 10, MASK), "RegularStimulus.tau"),
        (lambda: RegularStimulus(1.0, 5, 1, -10, MASK), "RegularStimulus.stop"),
        (lambda: RegularStimulus(math.nan, 5, 1, 10, MASK), "RegularStimulus.strength"),
        (lambda: RegularStimulus("1", 5, 1, 10, MASK), "RegularStimulus.strength"),
        (lambda: RegularStimulus(torch.ones(2), 5, 1, 10, MASK), "RegularStimulus.strength"),
        (lambda: RegularStimulus(1.0, math.inf, 1, 10, MASK), "RegularStimulus.period"),
        (lambda: RegularStimulus(1.0, 5, 1, 10, MASK, start=math.nan), "RegularStimulus.start"),
        (lambda: RegularStimulus(1.0, 5, 1, 10, MASK, dt=0), "RegularStimulus.dt"),
        (
            lambda: RegularStimulus(1.0, 5, 1, 10, MASK, batch_size=1.5),
            "RegularStimulus.batch_size",
        ),
        (lambda: PoissonStimulus(1.0, -2, 10, MASK), "PoissonStimulus.mean_interval"),
        (lambda: PoissonStimulus(1.0, 0, 10, MASK), "PoissonStimulus.mean_interval"),
        (lambda: PoissonStimulus(1.0, 2, -10, MASK), "PoissonStimulus.duration"),
        (lambda: PoissonStimulus(1.0, 2, 10, MASK, tau=-1), "PoissonStimulus.tau"),
        (lambda: PoissonStimulus(math.inf, 2, 10, MASK), "PoissonStimulus.strength"),
        (lambda: PoissonStimulus(1.0, 2, 10, MASK, start=math.inf), "PoissonStimulus.start"),
        (lambda: PoissonStimulus(1.0, 2, 10, MASK, seed=1.5), "PoissonStimulus.seed"),
        (lambda: PoissonStimulus(1.0, 2, 10, MASK, seed=-1), "PoissonStimulus.seed"),
        (
            lambda: PoissonStimulus(1.0, 2, 10, MASK, rng=torch.Generator(), seed=1),
            "PoissonStimulus.seed",
        ),
        (lambda: SinStimulus(-1.0, 10, 10, MASK), "SinStimulus.amplitude"),
        (lambda: SinStimulus(1.0, -10, 10, MASK), "SinStimulus.period"),
        (lambda: SinStimulus(1.0, 0, 10, MASK), "SinStimulus.period"),
        (lambda: SinStimulus(1.0, 10, -10, MASK), "SinStimulus.duration"),
        (lambda: SinStimulus(1.0, 10, 10, MASK, phase=math.nan), "SinStimulus.phase"),
        (lambda: SinStimulus(1.0, 10, 10, MASK, baseline=math.inf), "SinStimulus.baseline"),
        (lambda: SinStimulus(1.0, 10, 10, MASK, start=math.nan), "SinStimulus.start"),
        (lambda: SinStimulus(1.0, 10, 10, MASK, dt=-1), "SinStimulus.dt"),
        (lambda: SinStimulus(1.0, 10, 10, torch.ones(2, 2, 2)), "SinStimulus.stimulus_masks"),
        (lambda: SinStimulus(1.0, 10, 10, []), "SinStimulus.stimulus_masks"),
        (lambda: SinStimulus(1.0, 10, 10, [torch.ones(2, 2)]), "SinStimulus.stimulus_masks"),
        (lambda: SinStimulus(1.0, 10, 10, [[1.0, math.nan]]), "SinStimulus.stimulus_masks[0]"),
        (lambda: LoadedStimulus(torch.tensor([[1.0, math.inf]])), "LoadedStimulus.source"),
        (lambda: LoadedStimulus(torch.ones(3)), "LoadedStimulus.source"),
        (lambda: LoadedStimulus(torch.ones(3, 0)), "LoadedStimulus.source"),
        (lambda: LoadedStimulus(TABLE, batch_size=2), "LoadedStimulus.batch_size"),
    ],
)
def test_bad_arguments_name_the_argument(make, field):
    with pytest.raises(InputError) as error:
        make()
    assert str(error.value).startswith(f"{field}: ")
    assert "(expected" in str(error.value)


# --- PoissonStimulus ------------------------------------------------------------------------


def test_poisson_time_course_from_plan():
    stim = PoissonStimulus(3.0, 5, 100, torch.tensor([0.0, 1.0]), tau=2, seed=0)
    stim.event_times = torch.tensor([2.0, 5.0, 6.0])
    # On for 2 steps after each event: 2, 3 | 5, 6 | 6, 7.
    assert on_times(stim, 12) == []  # neuron 0 is masked out
    out = stim(torch.arange(12))
    assert torch.nonzero(out[1]).flatten().tolist() == [2, 3, 5, 6, 7]
    assert out[1, 2].item() == 3.0
    assert stim(3).tolist() == [0.0, 3.0] and stim(4).tolist() == [0.0, 0.0]
    assert torch.equal(out, torch.stack([stim(t) for t in range(12)], dim=1))


def test_poisson_plan_is_reproducible_and_local():
    state = torch.get_rng_state()
    a = PoissonStimulus(1.0, 4, 500, MASK, seed=7)
    b = PoissonStimulus(1.0, 4, 500, MASK, seed=7)
    c = PoissonStimulus(1.0, 4, 500, MASK, seed=8)
    d = PoissonStimulus(1.0, 4, 500, MASK, rng=torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.event_times, b.event_times)
    assert torch.equal(a.event_times, d.event_times)
    assert not torch.equal(a.event_times[:20], c.event_times[:20])
    with pytest.raises(ValueError):
        PoissonStimulus(1.0, 4, 500, MASK, rng=torch.Generator(), seed=1)


def test_poisson_plan_statistics():
    stim = PoissonStimulus(1.0, 5, 50_000, MASK, start=10, seed=1)
    times = stim.event_times
    assert times[0].item() == 10.0
    assert times.max().item() < 10 + 50_000
    # ~10 000 gaps with standard deviation sqrt(5): standard error ~0.02.
    assert abs(times.diff().mean().item() - 5.0) < 0.1
    assert (times.diff() >= 0).all()


def test_poisson_empty_duration_and_state_dict():
    assert PoissonStimulus(1.0, 5, 0, MASK)(torch.arange(10)).abs().sum() == 0
    a = PoissonStimulus(1.0, 3, 200, MASK, seed=1)
    b = PoissonStimulus(1.0, 3, 200, MASK, seed=2)
    b.load_state_dict(a.state_dict())
    times = torch.arange(250)
    assert torch.equal(a(times), b(times))


# --- SinStimulus ----------------------------------------------------------------------------


def test_sin_values():
    stim = SinStimulus(
        2.0, period=8, duration=8, stimulus_masks=torch.ones(1), start=4, baseline=0.5
    )
    expected = {
        3: 0.0,  # before start
        4: 0.5,  # sin(0)
        6: 2.5,  # sin(pi / 2)
        8: 0.5,  # sin(pi)
        10: -1.5,  # sin(3 pi / 2)
        11: 0.5 - math.sqrt(2),  # sin(7 pi / 4)
        12: 0.0,  # start + duration: off
        30: 0.0,
    }
    out = stim(torch.tensor(list(expected)))[0]
    assert out.tolist() == pytest.approx(list(expected.values()), abs=1e-5)
    for t, value in expected.items():
        assert stim(t).item() == pytest.approx(value, abs=1e-5)


def test_sin_dt_phase_and_gradients():
    # period in ms: with dt = 0.5 ms, a 4 ms period lasts 8 steps.
    stim = SinStimulus(
        1.0,
        period=4,
        duration=100,
        stimulus_masks=torch.tensor([1.0, 0.0]),
        phase=math.pi / 2,
        dt=0.5,
    )
    assert stim(0)[0].item() == pytest.approx(1.0)  # sin(pi / 2)
    assert stim(4)[0].item() == pytest.approx(-1.0, abs=1e-5)  # sin(pi + pi / 2)
    assert stim(4)[1].item() == 0.0
    stim.requires_grad_(True)
    stim(torch.arange(150)).sum().backward()
    assert stim.baseline.grad.item() == 100.0  # 100 steps inside the window, 1 masked neuron
    assert stim.amplitude.grad is not None and stim.phase.grad is not None


# --- LoadedStimulus -------------------------------------------------------------------------

TABLE = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [0.0, -1.0, 0.0, 1.0]])


def check_table(stim):
    assert stim.n_neurons == 3
    assert stim(0).tolist() == [1.0, 5.0, 0.0]
    assert stim(3).tolist() == [4.0, 8.0, 1.0]
    assert stim(2.0).tolist() == [3.0, 7.0, 0.0]
    assert stim(-1).tolist() == [0.0, 0.0, 0.0]
    assert stim(4).tolist() == [0.0, 0.0, 0.0]
    out = stim(torch.tensor([-2, 0, 3, 4, 9]))
    assert out.tolist() == [[0, 1, 4, 0, 0], [0, 5, 8, 0, 0], [0, 0, 1, 0, 0]]


def test_loaded_from_tensor_pt_and_npy(tmp_path):
    check_table(LoadedStimulus(TABLE))
    torch.save(TABLE, tmp_path / "stim.pt")
    check_table(LoadedStimulus(tmp_path / "stim.pt"))
    np.save(tmp_path / "stim.npy", TABLE.double().numpy())
    check_table(LoadedStimulus(str(tmp_path / "stim.npy")))


def test_loaded_batches_over_networks():
    source = torch.stack([TABLE, 10 * TABLE, 100 * TABLE], dim=2)  # [3, 4, 3 networks]
    stim = LoadedStimulus(source, batch_size=2)
    assert stim.n_batches == 2 and stim.n_neurons == 6
    assert stim(1).tolist() == [2, 6, -1, 20, 60, -10]
    stim.next_batch()
    assert stim.n_neurons == 3
    assert stim(torch.tensor([1, 5])).tolist() == [[200, 0], [600, 0], [-100, 0]]
    stim.reset()
    assert stim(0).shape == (6,)


def test_loaded_bad_sources(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"not a tensor file")
    torch.save(torch.ones(5), tmp_path / "flat.pt")
    torch.save({"a": torch.ones(2, 2)}, tmp_path / "dict.pt")
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan]]))
    (tmp_path / "table.txt").write_text("1 2 3")
    for name in ("garbage.pt", "flat.pt", "dict.pt", "nan.npy", "table.txt", "missing.pt"):
        with pytest.raises(InputError, match=rf"^{re.escape(str(tmp_path / name))}: .*\(expected"):
            LoadedStimulus(tmp_path / name)
    with pytest.raises(ValueError, match="source"):
        LoadedStimulus(torch.tensor([[1.0, math.inf]]))
    with pytest.raises(ValueError, match="batch_size"):
        LoadedStimulus(TABLE, batch_size=2)
