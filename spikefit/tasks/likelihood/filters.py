r"""The fitted history filters in time (``fitted_filters.npz``) and their figures.

A neuron's post-spike filter is :math:`h_i(\tau) = s_i \sum_a v_{ia} A_a(\tau)` on the self
basis A (s the refractory scale, 1 unless fitted), the coupling filter of a pair
:math:`j \to i` is :math:`r_i\, k_{ji}(\tau) = r_i \sum_b w_{jib} B_b(\tau)` on the coupling
basis B; a spike in bin t moves the input of bin :math:`t + 1 + \tau` by the filter at lag τ,
so lag τ is :math:`(\tau + 1)\,\Delta t` ms after the spike. A covariate filter
:math:`f_{ic}(\tau) = \sum_d u_{icd} D_d(\tau)` on the covariate basis D moves the input of
bin :math:`t + \tau` (with the current bin) or :math:`t + 1 + \tau` by a unit of covariate
c in bin t.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from spikefit.models import BaseModel
from spikefit.tasks.likelihood.metrics import panel_grid

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def self_filter_basis(
    model: BaseModel, n: int, scale: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The post-spike filters' basis [B_s, T] and every neuron's weights on it [N, B_s],
    times the refractory ``scale`` [N] (if fitted): the model's self basis and its weights;
    a shared self kernel not on a basis as one function of weight 1; kernels per neuron not
    on a basis as N functions with the identity as weights; no function without a self
    kernel."""
    kernel, basis = model.self_kernel(), model.self_basis()
    ones = torch.ones(n, device=model.dt.device)
    if kernel is None:
        basis, weights = ones.new_zeros(0, model.window), ones.new_zeros(n, 0)
    elif basis is not None:
        weights = model.self_kernel_weights().expand(n, -1)
    elif kernel.dim() == 1:
        basis, weights = kernel.unsqueeze(0), ones.unsqueeze(1)
    else:
        basis, weights = kernel, torch.diag(ones)
    return basis, weights if scale is None else weights * scale.unsqueeze(1)


def fitted_filters(
    model: BaseModel,
    edge_index: torch.Tensor,
    weights: torch.Tensor,
    n: int,
    self_scale: torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    r"""The arrays of ``fitted_filters.npz`` for ``model`` with the coupling ``weights`` [E]
    or [E, B] of the pairs ``edge_index`` [2, E] and the refractory scale ``self_scale`` [N]:
    ``self_basis`` [B_s, T], ``self_weights`` [N, B_s] (:func:`self_filter_basis`),
    ``self_filters`` :math:`h` [N, T] (weights @ basis), ``coupling_basis`` [B, T],
    ``coupling_weights`` [E, B], ``edge_index`` [2, E], ``coupling_filters``
    :math:`r_i k_{ji}` [E, T], ``lag_ms`` :math:`(\tau + 1)\Delta t` [T] and ``dt`` (ms),
    and the covariate filters' (:func:`covariate_arrays`)."""
    with torch.no_grad():
        self_basis, self_weights = self_filter_basis(model, n, self_scale)
        coupling_basis = model.coupling_basis()
        coupling_weights = weights.reshape(len(weights), len(coupling_basis))
        r = model.edge_recurrence(edge_index)
        arrays = {
            "self_basis": self_basis,
            "self_weights": self_weights,
            "self_filters": self_weights @ self_basis,
            "coupling_basis": coupling_basis,
            "coupling_weights": coupling_weights,
            "edge_index": edge_index,
            "coupling_filters": r * (coupling_weights @ coupling_basis),
            "lag_ms": (torch.arange(coupling_basis.shape[1]) + 1) * model.dt.cpu(),
            "dt": model.dt,
        } | covariate_arrays(model, n)
        return {name: value.detach().cpu().numpy() for name, value in arrays.items()}


def covariate_arrays(model: BaseModel, n: int) -> dict[str, torch.Tensor]:
    r"""With a covariate term: ``covariate_basis`` D [D, L], ``covariate_weights`` u
    [N, C, D], ``covariate_filters`` :math:`f` [N, C, L] and ``covariate_lag_ms`` [L], the
    time from the covariate's bin to the bin it moves, :math:`\tau\,\Delta t` with the current
    bin, else :math:`(\tau + 1)\Delta t`; none without."""
    filters = model.covariate_filters()
    if filters is None:
        return {}
    basis = model.covariate_basis()
    weights = model.covariate_weights.view(-1, model.n_covariates, len(basis))
    first = 0 if model.include_current_bin else 1
    return {
        "covariate_basis": basis,
        "covariate_weights": weights.expand(n, -1, -1),
        "covariate_filters": filters.expand(n, -1, -1),
        "covariate_lag_ms": (torch.arange(basis.shape[1]) + first) * model.dt.cpu(),
    }


def post_spike_figure(self_filters: np.ndarray, lag_ms: np.ndarray) -> Figure:
    r"""Every unit's post-spike gain :math:`e^{h_i(\tau)}` against the lag in ms (thin lines,
    their median in black; for an exponential link the factor on the rate, for a logistic
    one on the odds) and the filters :math:`h_i(\tau)` as a units × lag image, its colours
    clipped at the median over units of :math:`\max_\tau |h_i(\tau)|`."""
    from matplotlib.figure import Figure

    n = len(self_filters)
    gain = np.exp(self_filters)
    figure = Figure(figsize=(11, 4), layout="tight")
    curves, image = figure.subplots(1, 2)
    curves.plot(lag_ms, gain.T, lw=0.6, alpha=max(0.1, min(1.0, 5 / n)))
    curves.plot(lag_ms, np.median(gain, axis=0), color="black", lw=2, label="median")
    curves.axhline(1, color="grey", lw=0.8)
    curves.set_yscale("log")
    curves.set_ylim(bottom=min(max(gain.min(), 1e-3), 0.5))
    curves.legend()
    curves.set(
        xlabel="time since the spike (ms)",
        ylabel="gain exp(h)",
        title=f"post-spike filters of all {n} units: gain exp(h(τ))",
    )
    limit = max(float(np.median(np.abs(self_filters).max(axis=1))), 1e-6)  # a few run off
    shown = image.imshow(
        self_filters,
        aspect="auto",
        cmap="RdBu_r",
        vmin=-limit,
        vmax=limit,
        interpolation="nearest",
        extent=(lag_ms[0] - lag_ms[0] / 2, lag_ms[-1] + lag_ms[0] / 2, n - 0.5, -0.5),
    )
    figure.colorbar(shown, ax=image, label="h (input units)")
    image.set(
        xlabel="time since the spike (ms)",
        ylabel="unit",
        title=f"post-spike filters h(τ) by unit (colours clipped at ±{limit:.2g})",
    )
    return figure


def coupling_filters_figure(
    arrays: dict[str, np.ndarray], pairs: np.ndarray, ranked: str
) -> Figure:
    r"""The coupling filters :math:`r_i k_{ji}(\tau)` of the ``pairs`` (indices into the
    ``arrays`` of :func:`fitted_filters`, strongest first), a panel each labelled pre→post,
    against the lag in ms; ``ranked`` says by what they were chosen."""
    figure, panels = panel_grid(
        len(pairs), f"coupling filters r·k(τ) of the {len(pairs)} pairs with the largest {ranked}"
    )
    for panel, pair in zip(panels, pairs, strict=True):
        pre, post = arrays["edge_index"][:, pair]
        panel.plot(arrays["lag_ms"], arrays["coupling_filters"][pair])
        panel.axhline(0, color="grey", lw=0.8)
        panel.set(title=f"{pre}→{post}", xlabel="time since the pre spike (ms)")
    return figure


def covariate_filters_figure(arrays: dict[str, np.ndarray], names: list[str]) -> Figure:
    r"""Every unit's filter :math:`f_{ic}(\tau)` of each covariate c (a panel per covariate,
    named from ``names`` where given; thin lines per unit, their median in black) against
    the time from the covariate's bin to the bin it moves, in ms."""
    filters, lag_ms = arrays["covariate_filters"], arrays["covariate_lag_ms"]
    n, count = filters.shape[0], filters.shape[1]
    names = list(names) + [f"covariate {c}" for c in range(len(names), count)]
    figure, panels = panel_grid(count, f"covariate filters f(τ) of all {n} units")
    for c, panel in enumerate(panels):
        panel.plot(lag_ms, filters[:, c].T, lw=0.6, alpha=max(0.1, min(1.0, 5 / n)))
        panel.plot(lag_ms, np.median(filters[:, c], axis=0), color="black", lw=2)
        panel.axhline(0, color="grey", lw=0.8)
        panel.set(title=names[c], xlabel="time since the covariate's bin (ms)")
    panels[0].set_ylabel("f (input per unit of covariate)")
    return figure
