"""A likelihood fit on ``devices`` CPU processes (run by tests/test_likelihood.py).

Usage: python tests/ddp_likelihood_fit.py DEVICES SOLVER OUT_DIR

Every process simulates the same network and raster (same seeds), fits it (with a small L2
penalty, so that the optimum is unique, not a flat valley of equally likely weights), and rank 0
writes summary.json and fitted_W0.npy to OUT_DIR.
"""

import sys

import lightning as L
import torch

from spikefit.data import SpikeTrainDataModule
from spikefit.datasets import NormalGenerator, graph_to_dense
from spikefit.models import BernoulliGLM
from spikefit.tasks import L2, LBFGS, Adam, LikelihoodFit, Newton, NewtonCG
from spikefit.tasks.calibration import SEED_INTRODUCTION


def main(devices: int, solver: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    network = NormalGenerator(10, mean=0, std=5, glorot=True, seed=3).generate(1)[0]
    spikes = BernoulliGLM(**SEED_INTRODUCTION).simulate(network, 30_000, seed=4, verbose=False)
    adam = solver == "adam"
    solvers = {
        "adam": Adam(lr=0.05),
        "lbfgs": LBFGS(),
        "newton": Newton(),
        "newton-cg": NewtonCG(tolerance=1e-10),
    }
    task = LikelihoodFit(
        BernoulliGLM(**SEED_INTRODUCTION),
        per_neuron=["theta"],
        coupling="dense",
        regularizer=L2(1e-3),
        solver=solvers[solver],
    )
    data = SpikeTrainDataModule(
        spikes=spikes,
        network=graph_to_dense(network),
        chunk_bins=6_000,
        heldout_fraction=0.2,
        chunks_per_batch=2 if adam else None,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=60 if adam else 5,
        check_val_every_n_epoch=60 if adam else 1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=out_dir,
    )
    trainer.fit(task, data)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
