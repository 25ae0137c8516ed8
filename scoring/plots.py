"""Plots of `algoperf score`: performance profiles and per-workload times-to-target.

Uses matplotlib's object API (`Figure` + Agg canvas), never pyplot, so importing or
calling this touches no global matplotlib state; matplotlib is imported only here.
"""

from __future__ import annotations

import math
import os
from typing import List

import numpy as np

from scoring.score import ScoreResult

# (largest time shown, in s) -> unit: up to 2 minutes in seconds, up to 2 hours in minutes,
# else hours, so tick labels stay between ~1 and ~120 (digits runs take seconds, ImageNet
# ones tens of hours).
_UNITS = ((120.0, 1.0, 'seconds'), (7_200.0, 60.0, 'minutes'), (math.inf, 3_600.0, 'hours'))


def time_unit(max_seconds: float) -> tuple:
    """(divisor, unit name) for an axis whose largest time is `max_seconds`."""
    for limit, divisor, name in _UNITS:
        if not np.isfinite(max_seconds) or max_seconds <= limit:
            return divisor, name
    return _UNITS[-1][1:]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, output_dir: str, stem: str) -> List[str]:
    paths = []
    for ext in ('png', 'svg'):
        path = os.path.join(output_dir, f'{stem}.{ext}')
        fig.savefig(path, bbox_inches='tight')
        paths.append(path)
    return paths


def performance_profile_plot(result: ScoreResult, output_dir: str, title: str = '') -> List[str]:
    """rho_s(tau) step curves, one per submission, best score first in the legend."""
    fig = _figure(7.5, 4.8)
    ax = fig.add_subplot()
    from matplotlib import colormaps

    taus = np.asarray(result.rho.columns, dtype=float)
    colors = colormaps['tab20'].colors  # 20 distinct colors: leaderboards have 10+ entries
    for i, name in enumerate(result.scores.sort_values(ascending=False, kind='stable').index):
        ax.step(taus, result.rho.loc[name].to_numpy(), where='post', linewidth=1.8, color=colors[(2 * i) % 20
                if i < 10 else (2 * i + 1) % 20], label=f'{name} ({result.scores[name]:.4f})')
    ax.set_xlim(taus[0], taus[-1])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel('ratio to the fastest submission, τ')
    ax.set_ylabel('fraction of workloads solved within τ')
    ax.set_title(title or 'AlgoPerf performance profiles (score in legend)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='lower right', frameon=False)
    return _save(fig, output_dir, 'performance_profiles')


def time_to_target_chart(result: ScoreResult, output_dir: str) -> List[str]:
    """One panel per base workload: each submission's time-to-target (after the rules), in
    seconds, minutes or hours by the panel's range (`time_unit`)."""
    return _save(time_to_target_figure(result), output_dir, 'time_to_target')


def time_to_target_figure(result: ScoreResult):
    """The figure of `time_to_target_chart` (one axes per base workload)."""
    workloads = list(result.gated.columns)
    names = list(result.scores.sort_values(ascending=False, kind='stable').index)
    cols = 4
    rows = math.ceil(len(workloads) / cols)
    fig = _figure(4.0 * cols, 0.28 * len(names) * rows + 1.2 * rows)
    for i, w in enumerate(workloads):
        ax = fig.add_subplot(rows, cols, i + 1)
        times = result.gated[w].reindex(names).to_numpy(dtype=float)
        finite = times[np.isfinite(times)]
        cap = finite.max() * 1.05 if finite.size else 1.0
        divisor, unit = time_unit(cap)
        scaled = np.where(np.isfinite(times), times, 0.0) / divisor
        y = np.arange(len(names))
        ax.barh(y, scaled, color=['C0' if np.isfinite(t) else 'none' for t in times])
        for yi, t in zip(y, times):
            if not np.isfinite(t):
                ax.text(0, yi, ' no credit' if np.isinf(t) else ' no logs', va='center', fontsize=7, color='gray')
        ax.set_yticks(y, names if i % cols == 0 else [''] * len(names), fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, cap / divisor)
        ax.set_title(w, fontsize=9)
        ax.set_xlabel(f'{unit} to target', fontsize=8)
        ax.tick_params(axis='x', labelsize=7)
    fig.tight_layout()
    return fig
