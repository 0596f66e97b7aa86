"""How well a likelihood fit does: log-likelihood per bin, bits per spike and, against a
known network, the recovery of its edges and weights."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_roc,
)
from torchmetrics.functional.regression import pearson_corrcoef

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from spikefit.tasks.likelihood.uncertainty import Connections

#: The sums of a split's validation, over its chunks (weighted).
SUMS = ("log_likelihood", "baseline", "spikes", "bins")


def likelihood_metrics(total: dict[str, float]) -> dict[str, float]:
    """From the :data:`SUMS` of a split: the log-likelihood per neuron per bin (nats) and
    the bits per spike gained over the homogeneous baseline."""
    return {
        "log_likelihood_per_bin": total["log_likelihood"] / total["bins"],
        "bits_per_spike": (total["log_likelihood"] - total["baseline"])
        / (total["spikes"] * math.log(2)),
    }


def edge_metrics(fitted: torch.Tensor, truth: torch.Tensor, all_pairs: bool) -> dict[str, float]:
    """The Pearson correlation of the ``fitted`` with the ``truth`` weights [E] and, when
    the pairs are ``all_pairs`` N(N-1) with edges and non-edges among them, the AUROC and
    average precision of |W| for detecting the true edges."""
    metrics = {"weight_correlation": float(pearson_corrcoef(fitted, truth))}
    labels = (truth != 0).long()
    if all_pairs and 0 < int(labels.sum()) < len(labels):
        metrics["edge_auroc"] = float(binary_auroc(fitted.abs(), labels))
        metrics["edge_average_precision"] = float(binary_average_precision(fitted.abs(), labels))
    return metrics


def coupling_figure(
    fitted: torch.Tensor, truth: torch.Tensor, n_neurons: int, metrics: dict[str, float]
) -> Figure:
    """Fitted against true weights [E] of ``n_neurons`` neurons and the ROC curve of |W| for
    edge detection (with ``edge_auroc`` in the :func:`edge_metrics` ``metrics``)."""
    from matplotlib.figure import Figure

    fitted, truth = fitted.cpu(), truth.cpu()
    figure = Figure(figsize=(9, 4))
    left, right = figure.subplots(1, 2)
    left.scatter(truth, fitted, s=4, alpha=0.5)
    low, high = float(min(truth.min(), fitted.min())), float(max(truth.max(), fitted.max()))
    left.plot([low, high], [low, high], color="grey", lw=0.8)
    left.set(
        xlabel="true weight",
        ylabel="fitted weight",
        title=f"all {len(truth):,} fitted pairs of {n_neurons} neurons: "
        f"correlation {metrics.get('weight_correlation', math.nan):.3f}",
    )
    labels = (truth != 0).long()
    if "edge_auroc" in metrics:
        fpr, tpr, _ = binary_roc(fitted.abs(), labels)
        right.plot(fpr, tpr)
        right.set_title(
            f"detecting the {int(labels.sum()):,} true edges by |W|: AUROC "
            f"{metrics['edge_auroc']:.3f}"
        )
    right.plot([0, 1], [0, 1], color="grey", lw=0.8)
    right.set(xlabel="false positive rate", ylabel="true positive rate")
    figure.tight_layout()
    return figure


def connections_figure(connections: Connections, n_neurons: int) -> Figure:
    """The calls of the ``connections`` of ``n_neurons`` neurons as a [pre, post] matrix: red
    excitatory, blue inhibitory, white none, grey not fitted (the diagonal)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    colours = ListedColormap(["tab:blue", "white", "tab:red"]).with_extremes(bad="lightgrey")
    figure = Figure(figsize=(6, 5.5))
    axes = figure.subplots()
    axes.imshow(
        connections.matrix(n_neurons).numpy(),
        cmap=colours,
        vmin=-1.5,
        vmax=1.5,
        interpolation="nearest",
    )
    counts = connections.counts()
    axes.set(
        xlabel="postsynaptic neuron",
        ylabel="presynaptic neuron",
        title=f"connections called at FDR q ≤ {connections.fdr:g} (Wald test, Benjamini–"
        f"Hochberg):\n{counts['excitatory']} excitatory (red), {counts['inhibitory']} "
        f"inhibitory (blue), {counts['none']} none (white) of {len(connections.p):,} pairs",
    )
    figure.tight_layout()
    return figure


def panel_grid(count: int, title: str, columns: int = 4) -> tuple[Figure, list]:
    """A figure titled ``title`` with ``count`` small panels, ``columns`` a row (the unused
    ones of the last row hidden): the figure and its panels."""
    from matplotlib.figure import Figure

    rows = max(1, math.ceil(count / columns))
    figure = Figure(figsize=(3 * columns, 2.4 * rows + 0.6), layout="tight")
    panels = list(figure.subplots(rows, columns, squeeze=False).flat)
    for panel in panels[count:]:
        panel.set_visible(False)
    figure.suptitle(title)
    return figure, panels[:count]
