"""Penalty strengths per postsynaptic unit chosen by k-fold cross-validation over contiguous
time blocks of the training bins, with warm starts along the path of strengths."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from spikefit.data.spike_trains import Chunk, SpikeChunks

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from spikefit.tasks.likelihood.task import LikelihoodFit


def contiguous_folds(n_bins: int, folds: int) -> list[tuple[int, int]]:
    """The ``folds`` contiguous blocks [a, b) of bins 0 … n_bins - 1 that the folds leave out
    in turn, in time order, of ⌊n_bins/folds⌋ or ⌈n_bins/folds⌉ bins each."""
    edges = [round(k * n_bins / folds) for k in range(folds + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def fold_chunks(
    fit: LikelihoodFit, spans: list[tuple[int, int]], rank: int, world_size: int
) -> list[Chunk]:
    """Process ``rank``'s share of the chunks of the training data's bins in ``spans``
    ([a, b) each, chunked as the data module chunks them, each with its recorded history),
    padded with weight-0 copies so that all ``world_size`` processes hold as many, on the
    fit's device."""
    data = fit.trainer.datamodule
    history = data.hparams.history_bins
    history = fit.history_bins if history is None else history
    chunks: list[Chunk] = []
    for a, b in spans:
        pieces = SpikeChunks(
            data.spikes, a, b, data.hparams.chunk_bins, history, covariates=data.covariates
        )
        chunks += [pieces[k] for k in range(len(pieces))]
    chunks += [dict(chunks[0], weight=0.0)] * (-len(chunks) % world_size)
    return fit.transfer_batch_to_device(chunks[rank::world_size], fit.device, 0)


def cross_validate(fit: LikelihoodFit) -> dict:
    r"""For every fold k (its left-out block :math:`B_k` of :func:`contiguous_folds` over the
    training bins; with ``cv_last_block`` only the last one, a validation block at the end)
    and every strength :math:`\lambda_s` of the grid, strongest first: fits on the other
    training bins, from the start for the first strength and from the previous strength's
    solution after it (warm start), and scores each unit i's log-likelihood on :math:`B_k`
    per bin, :math:`\ell_{ksi}`. A fold's penalty weighs as much on its total
    log-likelihood as on the whole training span's (a prior on the weights, as in
    scikit-learn's C): λ times the training bins over the fold's. Each unit's chosen
    strength maximizes its mean curve :math:`\bar\ell_{si} = \frac1K \sum_k \ell_{ksi}`
    (the strongest among ties); the fit's per-unit strengths are set to them and its
    parameters to the last fold's solutions at them (:func:`chosen_solutions`), where the
    refit on all training bins starts. Returns ``cross_validation`` of ``summary.json``."""
    grid = sorted(fit.hparams.penalty_grid, reverse=True)
    n_train = fit.trainer.datamodule.n_train_bins
    folds = contiguous_folds(n_train, fit.hparams.cv_folds)
    if fit.hparams.cv_last_block:
        folds = folds[-1:]
    rank, world_size = fit.global_rank, fit.trainer.world_size
    start = fit.trainable_state()
    scores = torch.zeros(len(folds), len(grid), fit.n_neurons, dtype=torch.float64)
    bar = fit.progress(len(folds) * len(grid), "cross-validation")
    for k, (a, b) in enumerate(folds):
        train = fold_chunks(fit, [(0, a), (b, n_train)], rank, world_size)
        heldout = fold_chunks(fit, [(a, b)], rank, world_size)
        fit.load_trainable_state(start)
        solutions = []  # the fold's solution at every strength
        for s, strength in enumerate(grid):
            prior = float(strength) * n_train / (n_train - (b - a))
            fit.unit_strength = torch.full((fit.n_neurons,), prior)
            fit.fit_chunks(train)
            scores[k, s] = fit.unit_log_likelihood(heldout).double().cpu() / (b - a)
            solutions.append(fit.trainable_state())
            bar.update()
    bar.close()
    curves = scores.mean(0)  # [S, N]
    chosen = curves.argmax(0)
    if not fit.hparams.cv_per_unit:  # the strength best for all units together
        chosen = torch.full_like(chosen, int(curves.sum(1).argmax()))
    fit.unit_strength = torch.tensor(grid, dtype=torch.float32)[chosen]
    fit.load_trainable_state(chosen_solutions(fit, solutions, chosen))
    mean_curve = curves.mean(1)
    if fit.logger is not None:
        for s, value in enumerate(mean_curve.tolist()):
            fit.logger.log_metrics({"cv/log_likelihood": value, "cv/strength": grid[s]}, step=s)
    return {
        "grid": grid,
        "folds": [list(fold) for fold in folds],
        "chosen_strength": [grid[s] for s in chosen.tolist()],
        "mean_curve": mean_curve.tolist(),
        "unit_curves": curves.t().tolist(),
    }


def chosen_solutions(
    fit: LikelihoodFit, solutions: list[list[torch.Tensor]], chosen: torch.Tensor
) -> list[torch.Tensor]:
    """The fitted parameters with every unit's rows (its block: its incoming coupling, its
    per-neuron values) from ``solutions[chosen[i]]`` (one :meth:`trainable_state` per
    strength) and the shared ones from the strength most units chose."""
    common = int(torch.mode(chosen).values)
    state = []
    for rows, values in zip(fit.unit_rows(), zip(*solutions, strict=True), strict=True):
        if rows is None:
            state.append(values[common].clone())
            continue
        pick = chosen.to(rows.device)[rows]
        state.append(torch.stack(values)[pick, torch.arange(len(rows), device=rows.device)])
    return state


def describe(result: dict) -> str:
    """The console line of a ``cross_validation`` result."""
    chosen = np.asarray(result["chosen_strength"])
    values, counts = np.unique(chosen, return_counts=True)
    picks = ", ".join(
        f"λ={value:.3g}: {count}" for value, count in zip(values, counts, strict=True)
    )
    return (
        f"  penalty by {len(result['folds'])}-fold cross-validation over "
        f"{len(result['grid'])} strengths, units per chosen strength: {picks}"
    )


def curves_figure(result: dict) -> Figure:
    """Each unit's mean cross-validated log-likelihood (nats per bin, relative to its best)
    against the penalty strength, with the mean over units and the chosen strengths."""
    from matplotlib.figure import Figure

    grid = np.asarray(result["grid"])
    curves = np.asarray(result["unit_curves"])  # [N, S]
    relative = curves - curves.max(1, keepdims=True)
    figure = Figure(figsize=(5, 3.5))
    axes = figure.subplots()
    positions = np.arange(len(grid))
    axes.plot(positions, relative.T, color="0.7", lw=0.8)
    axes.plot(positions, relative.mean(0), color="k", lw=2, label="mean over units")
    chosen = [int(np.flatnonzero(grid == value)[0]) for value in result["chosen_strength"]]
    axes.plot(chosen, np.zeros(len(chosen)), "v", color="C3", label="chosen")
    axes.set_xticks(positions, [f"{value:.2g}" for value in grid], rotation=45)
    axes.set_xlabel("penalty strength λ (strongest first)")
    axes.set_ylabel("CV log-likelihood − best (nats/bin)")
    axes.legend(frameon=False)
    figure.tight_layout()
    return figure
