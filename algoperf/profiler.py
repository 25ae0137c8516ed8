"""`--profile`: wall-clock totals per harness action, printed after each trial.

Upstream's simple action profiler. Regions are not CUDA-synchronised (that
would add host syncs to the step loop); on GPU, asynchronous work shows up in
whichever region synchronises next (the clock's time point).
"""

from __future__ import annotations

import collections
import contextlib
import time
from typing import Dict, Iterator, List


class Profiler:
    """Accumulates durations per action name."""

    def __init__(self) -> None:
        self.durations: Dict[str, List[float]] = collections.defaultdict(list)

    @contextlib.contextmanager
    def profile(self, action: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.durations[action].append(time.perf_counter() - start)

    def summary(self) -> str:
        rows = sorted(self.durations.items(), key=lambda kv: -sum(kv[1]))
        total = sum(sum(v) for _, v in rows) or 1.0
        lines = [f'{"action":<28}{"calls":>8}{"mean (ms)":>12}{"total (s)":>12}{"share":>8}']
        for name, values in rows:
            s = sum(values)
            lines.append(f'{name:<28}{len(values):>8}{1e3 * s / len(values):>12.3f}{s:>12.3f}{s / total:>8.1%}')
        return '\n'.join(lines)


class PassThroughProfiler(Profiler):
    """No-op profiler used when --profile is off."""

    @contextlib.contextmanager
    def profile(self, action: str) -> Iterator[None]:
        yield

    def summary(self) -> str:
        return ''
