"""FilterGLM: filters on bases simulate exactly as teacher forcing computes them, and a fit of
simulated spikes recovers the post-spike and coupling filters; recordings with several spikes
in a bin are clipped for a Bernoulli fit, and say how many bins were clipped."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch

from spikefit.checks import InputError
from spikefit.data import SpikeTrainDataModule
from spikefit.datasets import NormalGenerator
from spikefit.io import write_spike_times
from spikefit.models import FilterGLM
from spikefit.models.bases import RaisedCosineLog
from spikefit.tasks import LikelihoodFit
from spikefit.tasks.solvers import Newton
from tests import QUIET
from tests.test_models import Replay

#: A refractory dip, then a rebound, on the log raised cosines of 4 functions over 30 ms.
TRUE_SELF = [-6.0, -2.0, 0.8, 0.3]


def network(n: int, seed: int = 2):
    """A network with 4 weights per edge (the coupling filters on the basis)."""
    data = NormalGenerator(n, mean=0, std=3, glorot=True, seed=seed).generate(1)[0]
    generator = torch.Generator().manual_seed(seed)
    profile = torch.tensor([1.0, 0.6, 0.3, 0.1])
    noise = 0.2 * torch.randn(len(data.W0), 4, generator=generator)
    data.W0 = data.W0.unsqueeze(1) * (profile + noise)
    return data


def model(**options) -> FilterGLM:
    return FilterGLM(window_ms=30, n_basis=4, b=-3.5, self_weights=TRUE_SELF, **options)


def test_the_filters_are_the_weights_on_the_bases():
    glm = model()
    basis = RaisedCosineLog(4, 30)()
    assert torch.allclose(glm.self_kernel(), torch.tensor(TRUE_SELF) @ basis)
    assert torch.allclose(glm.coupling_basis(), basis)
    assert glm.declares_kernels and glm.effective_emission.name == "bernoulli"
    assert FilterGLM(emission="poisson").effective_emission.name == "poisson"
    with pytest.raises(InputError, match=r"^FilterGLM\.emission: 'gamma' is not a choice"):
        FilterGLM(emission="gamma")


def test_engines_and_teacher_forcing_give_the_same_inputs():
    data = network(12)
    raster = (torch.rand(12, 200, generator=torch.Generator().manual_seed(4)) < 0.1).float()

    class Forced(Replay, FilterGLM):
        def __init__(self, raster):
            super().__init__(window_ms=30, n_basis=4, b=-3.5, self_weights=TRUE_SELF)
            self.replay(raster)

    recorded = {}
    for engine in ("fast", "reference"):
        glm = Forced(raster)
        glm.simulate(data, 200, seed=5, equilibration_steps=0, verbose=False, engine=engine)
        recorded[engine] = torch.stack(glm.inputs)
    assert torch.allclose(recorded["fast"], recorded["reference"], atol=1e-5)
    forced = Forced(raster).input_from_spikes(data, raster.unsqueeze(0))[0, :, 30:]
    assert torch.allclose(forced, recorded["fast"].t()[:, 30:], atol=1e-4)


def test_a_fit_recovers_the_post_spike_and_coupling_filters(tmp_path):
    data = network(10)
    spikes = model().simulate(data, 60_000, seed=3, verbose=False)
    assert 0.01 < spikes.float().mean() < 0.1
    task = LikelihoodFit(
        FilterGLM(window_ms=30, n_basis=4),
        per_neuron=["b", "self_weights"],
        coupling="graph",
        solver=Newton(),
    )
    module = SpikeTrainDataModule(spikes=spikes, network=data, heldout_fraction=0.2)
    L.Trainer(max_epochs=20, default_root_dir=tmp_path, **QUIET).fit(task, module)
    assert task.converged
    basis = RaisedCosineLog(4, 30)()
    fitted_self = task.model.self_weights.detach() @ basis  # [N, T]
    true_self = torch.tensor(TRUE_SELF) @ basis
    for neuron in range(10):
        assert torch.corrcoef(torch.stack([fitted_self[neuron], true_self]))[0, 1] > 0.95
    fitted, true = task.coupling_weights.detach() @ basis, data.W0 @ basis  # filters in time
    assert torch.corrcoef(torch.stack([fitted.flatten(), true.flatten()]))[0, 1] > 0.8
    assert task.summary()["bits_per_spike"]["heldout"] > 0.1


def test_several_spikes_in_a_bin_are_clipped_for_a_bernoulli_fit_and_counted(tmp_path):
    raster = (torch.rand(4, 3000, generator=torch.Generator().manual_seed(1)) < 0.05).float()
    raster[0, 10] = raster[1, 20] = raster[1, 30] = 2
    path = write_spike_times(tmp_path / "doubles.npz", raster, dt_ms=1.0)
    glm = FilterGLM(window_ms=10, n_basis=3)
    with pytest.raises(InputError, match=r"clip_counts 1"):
        task = LikelihoodFit(glm, per_neuron=["b"], coupling="none")
        L.Trainer(max_epochs=1, default_root_dir=tmp_path, **QUIET).fit(
            task, SpikeTrainDataModule(path=str(path))
        )
    task = LikelihoodFit(FilterGLM(window_ms=10, n_basis=3), per_neuron=["b"], coupling="none")
    module = SpikeTrainDataModule(path=str(path), clip_counts=1)
    L.Trainer(max_epochs=3, default_root_dir=tmp_path, **QUIET).fit(task, module)
    assert module.spikes.max() == 1 and task.summary()["clipped_bins"] == 3
    assert np.isfinite(task.summary()["log_likelihood_per_bin"]["train"])
