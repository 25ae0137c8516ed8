"""Trial progress on stderr: a redrawn bar on a terminal, periodic lines otherwise.

Called from the step loop after the step's time point; it only formats a
string when at least `min_interval` seconds passed (0.5 s on a terminal, 30 s
in logs), so its cost on the clock is ~1 µs per step (one time.monotonic()).
Everything else (steps/s, ETA, the origin they are measured from) is computed
only when a line is drawn.

The bar shows steps/s over submission time (the step speed, not diluted by
evals) and an ETA in wall time: the submission time left until the budget (or
until --max_global_steps at the current speed, whichever comes first), scaled
by wall time / submission time so far (evals and logging included). It is an
upper bound: a trial that reaches its targets ends earlier.

`--quiet` (`quiet=True`): `note` lines (trial headers, hyperparameters) are
dropped; `write` lines (trial summaries, the end-of-run table, log records
that pass the log level) always print.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import time
from typing import Optional, TextIO


def format_duration(seconds: float) -> str:
    """`42s`, `7m05s`, `3h12m` (an ETA; precision beyond that is noise)."""
    if not math.isfinite(seconds) or seconds < 0:
        return '?'
    seconds = round(seconds)
    if seconds < 60:
        return f'{seconds}s'
    if seconds < 3600:
        return f'{seconds // 60}m{seconds % 60:02d}s'
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'


def eval_summary(step: int, metric: str, value: Optional[float], target: Optional[float], reached: bool,
                 used: float, budget: float) -> str:
    """The one line logged per eval, e.g.

    `step 240  validation/accuracy 0.9612 (target 0.975)  12.3s / 20s (62%)`
    """
    shown = f'{value:.4g}' if isinstance(value, (int, float)) else 'n/a'
    goal = f' (target {target:g}{", reached" if reached else ""})' if target is not None else ''
    share = f' ({used / budget:.0%})' if budget > 0 and math.isfinite(budget) else ''
    spent = f'{used:,.1f}' if used >= 10 else f'{used:.2f}'  # digits: 0.04 s, not 0.0 s
    return f'step {step}  {metric} {shown}{goal}  {spent}s / {budget:,.0f}s{share}'


class Progress:
    """Progress of one trial."""

    def __init__(self, enabled: bool = True, stream: Optional[TextIO] = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled and not quiet
        self.quiet = quiet
        self.tty = self.enabled and hasattr(self.stream, 'isatty') and self.stream.isatty()
        self.min_interval = 0.5 if self.tty else 30.0
        self._last = 0.0
        self._bar_visible = False
        self._origin: Optional[tuple] = None  # (monotonic, step, submission time) of the first line
        self.label = ''
        self.last_metric = ''
        self.max_steps: Optional[int] = None

    def start(self, label: str, max_steps: Optional[int] = None) -> None:
        self.label = label
        self.last_metric = ''
        self.max_steps = max_steps
        self._last = 0.0
        self._origin = None

    def _speed(self, now: float, step: int, used: float, budget: float) -> str:
        """' | 12.3 steps/s | ETA 7m05s', or '' until there is a measured interval."""
        if self._origin is None:
            self._origin = (now, step, used)
            return ''
        t0, step0, used0 = self._origin
        steps, sub = step - step0, used - used0
        if steps <= 0 or sub <= 0:
            return ''
        rate = steps / sub  # steps per second of submission time
        left = max(budget - used, 0.0) if budget > 0 else math.inf
        if self.max_steps is not None:
            left = min(left, max(self.max_steps - step, 0) / rate)
        eta = left * (now - t0) / sub if math.isfinite(left) else math.inf
        speed = f'{rate:,.1f}' if rate >= 10 else f'{rate:.2g}'
        return f' | {speed} steps/s | ETA {format_duration(eta)}'

    def _line(self, step: int, used: float, budget: float, now: float) -> str:
        frac = min(used / budget, 1.0) if budget > 0 and math.isfinite(budget) else 0.0
        width = 24
        bar = '#' * int(frac * width) + '-' * (width - int(frac * width))
        metric = f' | {self.last_metric}' if self.last_metric else ''
        speed = self._speed(now, step, used, budget)
        return f'{self.label} step {step} | [{bar}] {used:,.1f}/{budget:,.0f}s submission time{speed}{metric}'

    def update(self, step: int, used: float, budget: float, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        line = self._line(step, used, budget, now)
        if self.tty:
            # One terminal row: a wrapped line could not be redrawn in place by '\r'.
            columns = shutil.get_terminal_size((200, 24)).columns
            self.stream.write('\r\033[K' + line[:max(columns - 1, 20)])
            self._bar_visible = True
        else:
            self.stream.write(line + '\n')
        self.stream.flush()

    def write(self, message: str) -> None:
        """Print a full line without garbling the bar (shown even with --quiet)."""
        if self._bar_visible:
            self.stream.write('\r\033[K')
            self._bar_visible = False
        self.stream.write(message + '\n')
        self.stream.flush()

    def note(self, message: str) -> None:
        """A line of detail (trial header, hyperparameters): dropped with --quiet."""
        if not self.quiet:
            self.write(message)

    def close(self) -> None:
        if self._bar_visible:
            self.stream.write('\n')
            self.stream.flush()
            self._bar_visible = False


class ProgressLogHandler(logging.Handler):
    """Routes log records through Progress.write so they don't overwrite the bar."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.progress.write(self.format(record))
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)
