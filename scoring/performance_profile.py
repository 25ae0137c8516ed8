"""Performance profiles and the AlgoPerf benchmark score (upstream rules, in order).

Starting from the table t[submission, workload] of per-workload times-to-target
(time_to_target.py; NaN where a submission has no logs for a workload):

 1. Keep the scored columns: the base workloads plus, in v0.5, the held-out variants
    (upstream v0.6 keeps every column when no held-out list exists, so a stray variant
    directory can gate its base workload; here the base workloads are kept then).
 2. Variant gated by its base: t[v] = inf where t[base(v)] is inf or NaN.
 3. The 4x rule: per column, entries above 4 x the column's minimum (over submissions,
    NaN skipped) become inf.
 4. Base gated by its variant: t[b] = inf where t[v] is inf or NaN (v0.5 held-out rule:
    a submission must also solve the sampled variant).
 5. Keep the base columns; ratio r = t / (column minimum); inf and NaN never count.
 6. rho_s(tau) = #{workloads: r <= tau} / N with N the number of base workloads of the
    version or targets file (8 in v0.5/v0.6, 9 in v1.0 as upstream's `num_base_workloads`;
    fixed, not the number of columns present), on tau = linspace(1, 4, 100).
 7. Score B_s = trapz(rho_s, tau) / (4 - 1), in [0, 1].
Scores are relative to the set of submissions scored together.

Speedup (after upstream's compute_speedups.py): per base workload the reference's median
time over the submission's (> 1: faster), where not reached (inf) and no logs (NaN) become
(budget x factor + 1) s with the benchmark version's budgets and factor 1 external / the
version's self-tuning factor (1.5 in v1.0/v0.6, 3 in v0.5; `algoperf.benchmark_versions`),
where upstream always used v0.5 budgets and factor 3 and left NaN out of the mean; geometric
mean over the base workloads. No 4x or held-out rule is applied.
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, Optional, Sequence

import numpy as np
import pandas as pd

MIN_TAU, MAX_TAU, NUM_TAU = 1.0, 4.0, 100
MAX_RATIO = 4.0


def base_of(workload: str, base_workloads: Sequence[str]) -> Optional[str]:
    """Upstream's rule: the first base workload name contained in the variant's name."""
    for base in base_workloads:
        if base in workload:
            return base
    return None


def apply_rules(times: pd.DataFrame, base_workloads: Sequence[str], held_out: Sequence[str] = ()) -> pd.DataFrame:
    """Steps 1-5 above: the gated base-workload table (inf = not solved)."""
    keep = [c for c in list(base_workloads) + list(held_out) if c in times.columns]
    t = times[sorted(keep)].astype(float).copy()
    variants = [c for c in t.columns if c not in base_workloads]
    for v in variants:
        b = base_of(v, base_workloads)
        if b in t.columns:
            bad = t[b].isna() | np.isinf(t[b])
            t.loc[bad, v] = math.inf
    mins = t.min(axis=0, skipna=True)
    with np.errstate(invalid='ignore'):
        t = t.mask(t > MAX_RATIO * mins, math.inf)
    for v in variants:
        b = base_of(v, base_workloads)
        if b in t.columns:
            bad = t[v].isna() | np.isinf(t[v])
            t.loc[bad, b] = math.inf
    return t[[c for c in t.columns if c in base_workloads]]


def ratios(gated: pd.DataFrame) -> pd.DataFrame:
    """Per-workload ratio to the best submission (inf/NaN stay)."""
    mins = gated.min(axis=0, skipna=True)
    with np.errstate(invalid='ignore', divide='ignore'):
        return gated / mins


def profiles(ratio: pd.DataFrame, num_base_workloads: int, taus: Optional[np.ndarray] = None) -> pd.DataFrame:
    """rho_s(tau): rows submissions, columns tau values."""
    taus = np.linspace(MIN_TAU, MAX_TAU, NUM_TAU) if taus is None else taus
    values = ratio.to_numpy(dtype=float)
    counts = np.stack([(values <= tau).sum(axis=1) for tau in taus], axis=1)  # NaN/inf never <= tau
    return pd.DataFrame(counts / num_base_workloads, index=ratio.index, columns=taus)


def benchmark_scores(rho: pd.DataFrame) -> pd.Series:
    """Normalised area under each profile: trapz(rho, tau) / (max_tau - min_tau)."""
    taus = np.asarray(rho.columns, dtype=float)
    trapezoid = getattr(np, 'trapezoid', None) or np.trapz  # numpy < 2 has only trapz
    area = trapezoid(rho.to_numpy(), x=taus, axis=1)
    return pd.Series(area / (taus[-1] - taus[0]), index=rho.index, name='score')


def speedups(times: pd.DataFrame, reference: str, budgets: Dict[str, float], factor: float,
             base_workloads: Iterable[str]) -> pd.DataFrame:
    """Per-workload and geometric-mean speedup of each submission vs `reference`.

    Speedup > 1 means faster than the reference (reference time / submission time).
    """
    if reference not in times.index:
        raise KeyError(f'reference submission {reference!r} not among {sorted(times.index)}')
    cols = [w for w in base_workloads if w in times.columns]
    capped = times[cols].astype(float).copy()
    for w in cols:
        # No logs counts as not reached (upstream leaves NaN, which the mean then skips:
        # a submission missing a workload would look faster than one that tried it).
        capped.loc[np.isinf(capped[w]) | capped[w].isna(), w] = budgets[w] * factor + 1
    ratio = capped.loc[reference] / capped
    ratio['geometric_mean'] = np.exp(np.log(ratio[cols]).mean(axis=1, skipna=True))
    return ratio
