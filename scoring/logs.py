"""Reading AlgoPerf log trees (upstream's layout, as real trees actually are).

    <submission_directory>/<submission>/<study>/<workload>_<framework>/trial_<k>/eval_measurements.csv

What real trees contain, and what is done with it:
  * `<submission>-YYYY-MM-DD-HH-MM-SS` siblings (runs started with --append_timestamp): merged into
    `<submission>`, as upstream's `get_experiment_df` does.
  * trial directories without eval_measurements.csv, or with an empty (0-byte) one (a run that
    never evaluated): skipped, counted.
  * stray `trial_*` directories directly under a study (not under a workload dir): skipped with a warning.
  * directories that are not `<workload>_<jax|pytorch>`: skipped with a warning.
  * NaN (or empty) metric cells (diverged runs): kept; NaN never reaches a target.
  * variant workload directories: loaded; whether they count is the scorer's decision.

Every eval file is validated when read (`Schema`), and a file that fails is EXCLUDED: it is
listed in `LoadReport.excluded` and logged as a warning naming the file and line, and its trial
takes no part in scoring (it can never set a workload's best time, which the 4x rule would
turn into inf for everybody else). A file fails when it
  * is larger than the size cap (`max_bytes`, `algoperf score --max_log_mb`, default 64 MB:
    the largest of the 4,377 real eval files in the v0.5/v0.6 leaderboard logs is 125 kB);
  * cannot be read or parsed (bad encoding, a row with the wrong number of fields, a repeated
    column name);
  * lacks a required column (the time `score`, `global_step`, and the workload's target column:
    a trial without its target metric is excluded, not silently counted as never reaching it);
  * has a cell in a column read that is not a number (`True` is not read as 1.0; empty and
    `nan` cells are NaN);
  * has a time cell (`global_step`, `score`, `accumulated_submission_time`) that is NaN,
    infinite, negative (or 0, for the two times), or smaller than the row above (times never
    run backwards in a trial: checked on all 4,377 real files), or a `score` that differs
    from `accumulated_submission_time` where both are read (upstream's definition);
  * has a target-metric value outside the metric's possible range (`Schema.bounds`, e.g. an
    accuracy of 1.5 or a loss of -inf; +inf stays allowed where a metric can overflow, ppl).

Reading streams: only the columns a workload needs are converted, row by row, into float64
arrays, so memory is ~8 bytes per kept cell (a 150 MB file with 550,000 rows holds ~20 MB),
never the whole text. The csv module is used rather than `pandas.read_csv` (about a
millisecond of fixed cost per file), since a leaderboard tree holds thousands of small files.
"""

from __future__ import annotations

import array
import csv
import dataclasses
import logging
import math
import os
import re
import sys
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

_log = logging.getLogger(__name__)

TIMESTAMP_SUFFIX = re.compile(r'^(?P<name>.+)-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}$')
WORKLOAD_DIR = re.compile(r'^(?P<workload>.+)_(?P<framework>jax|pytorch)$')
TRIAL_DIR = re.compile(r'^trial_(?P<k>\d+)$')
EVAL_CSV = 'eval_measurements.csv'
TIME_COLUMNS = ('global_step', 'score', 'accumulated_submission_time')
DEFAULT_MAX_LOG_MB = 64.0
_CHUNK_ROWS = 8192  # Rows converted at a time: bounded text in memory, numpy-speed conversion.
# Warnings printed one by one before the rest are summarised (all are in LoadReport.excluded).
_MAX_WARNINGS = 20


class LogFormatError(ValueError):
    """A log file that cannot be used; the message names the file (and the line, where one is at fault)."""

    def __init__(self, message: str, path: str = '', line: Optional[int] = None):
        super().__init__(message)
        self.path, self.line = path, line


@dataclasses.dataclass(frozen=True)
class Schema:
    """What a workload's eval files must hold.

    Attributes:
        required: columns that must be present (else the file is excluded).
        optional: columns read when present; None reads every column.
        bounds: column -> (low, high): its non-NaN values must lie in [low, high].
    """

    required: Tuple[str, ...] = ('global_step', 'score')
    optional: Optional[Tuple[str, ...]] = None
    bounds: Mapping[str, Tuple[float, float]] = dataclasses.field(default_factory=dict)

    def wanted(self, header: List[str]) -> List[str]:
        if self.optional is None:
            return list(header)
        keep = set(self.required) | set(self.optional)
        return [c for c in header if c in keep]


@dataclasses.dataclass
class TrialLog:
    """The eval rows of one trial, column name -> float64 array (NaN where empty)."""

    submission: str
    study: str
    workload: str
    framework: str
    trial: str
    path: str
    columns: Dict[str, np.ndarray]

    @property
    def num_evals(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


@dataclasses.dataclass(frozen=True)
class Exclusion:
    """A trial left out because its eval file failed validation."""

    submission: str
    workload: str
    path: str
    line: Optional[int]
    reason: str  # The LogFormatError message (names the file and line).


@dataclasses.dataclass
class LoadReport:
    """What was skipped while loading, for the user and for --strict."""

    trials_read: int = 0
    missing_csv: List[str] = dataclasses.field(default_factory=list)
    stray_dirs: List[str] = dataclasses.field(default_factory=list)
    empty_csv: List[str] = dataclasses.field(default_factory=list)
    excluded: List[Exclusion] = dataclasses.field(default_factory=list)


def _convert(path: str, chunk: List[List[str]], lines: 'array.array', index: List[int], names: List[str],
             store: List[List[np.ndarray]]) -> None:
    """Appends the float64 values of `chunk`'s wanted cells to `store` (one array per column)."""
    if not chunk:
        return
    first_line = len(lines) - len(chunk)
    for j, name, out in zip(index, names, store):
        cells = [r[j] for r in chunk]
        try:  # numpy parses each str with float() (same grammar), without a Python loop per cell.
            out.append(np.array(cells, dtype=np.float64))
            continue
        except ValueError:
            pass
        values = np.empty(len(cells))
        for i, text in enumerate(cells):  # Empty cells (NaN) or a bad one: find which.
            if not text:
                values[i] = math.nan
                continue
            try:
                values[i] = float(text)
            except ValueError:
                line = lines[first_line + i]
                raise LogFormatError(f'{path}: line {line}: {name} = {text[:40]!r} is not a number; excluded.',
                                     path, line) from None
        out.append(values)


def _read(path: str, schema: Schema, max_bytes: Optional[int]) -> Tuple[Dict[str, np.ndarray], np.ndarray,
                                                                         Optional[List[str]]]:
    """(columns, physical line number of each row, header or None for an empty file).

    Raises LogFormatError naming the file and line.
    """
    try:
        f = open(path, newline='', encoding='utf-8')
    except OSError as e:
        raise LogFormatError(f'{path}: cannot read ({e.strerror or e}).', path) from e
    with f:
        size = os.fstat(f.fileno()).st_size
        if max_bytes is not None and size > max_bytes:
            raise LogFormatError(f'{path}: {size / 1e6:.1f} MB is over the {max_bytes / 1e6:g} MB cap per eval '
                                 f'file (--max_log_mb); excluded.', path)
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                return {}, np.zeros(0, dtype=np.int64), None
            if len(set(header)) != len(header):
                raise LogFormatError(f'{path}: line 1: duplicate column names in the header.', path, 1)
            names = schema.wanted(header)
            index = [header.index(c) for c in names]
            store: List[List[np.ndarray]] = [[] for _ in names]
            lines = array.array('q')
            chunk: List[List[str]] = []
            width = len(header)
            for row in reader:
                if not row:
                    continue  # Blank lines are skipped; line numbers stay those of the file.
                if len(row) != width:
                    line = reader.line_num
                    raise LogFormatError(f'{path}: line {line} has {len(row)} fields, the header has {width}.',
                                         path, line)
                chunk.append(row)
                lines.append(reader.line_num)
                if len(chunk) == _CHUNK_ROWS:
                    _convert(path, chunk, lines, index, names, store)
                    chunk = []
            _convert(path, chunk, lines, index, names, store)
        except csv.Error as e:
            raise LogFormatError(f'{path}: line {reader.line_num}: malformed CSV ({e}).', path, reader.line_num) from e
        except UnicodeDecodeError as e:
            raise LogFormatError(f'{path}: not UTF-8 text ({e.reason} at byte {e.start}).', path) from e
    columns = {n: np.concatenate(parts) if parts else np.zeros(0) for n, parts in zip(names, store)}
    return columns, np.frombuffer(lines, dtype=np.int64).copy() if len(lines) else np.zeros(0, np.int64), header


def _show(value: float) -> str:
    return repr(float(value))


def _validate(path: str, header: List[str], columns: Dict[str, np.ndarray], lines: np.ndarray,
              schema: Schema) -> None:
    missing = [c for c in schema.required if c not in header]
    if missing:
        raise LogFormatError(f'{path}: no column {", ".join(missing)} (header lacks it); excluded.', path, 1)
    for name in TIME_COLUMNS:
        values = columns.get(name)
        if values is None or not len(values):
            continue
        # A time of 0 would be a best time no one can be within 4x of: submission time only
        # counts after the first step, so it is > 0 (global_step >= 0).
        positive = name != 'global_step'
        bad = ~np.isfinite(values) | ((values <= 0) if positive else (values < 0))
        if bad.any():
            i = int(np.argmax(bad))
            kind = 'positive' if positive else 'non-negative'
            raise LogFormatError(f'{path}: line {lines[i]}: {name} = {_show(values[i])} is not a finite, {kind} '
                                 f'number; excluded.', path, int(lines[i]))
        back = np.diff(values) < 0
        if back.any():
            i = int(np.argmax(back)) + 1
            raise LogFormatError(f'{path}: line {lines[i]}: {name} = {_show(values[i])} is below the row above '
                                 f'({_show(values[i - 1])}); times never run backwards; excluded.', path, int(lines[i]))
    score, sub_time = columns.get('score'), columns.get('accumulated_submission_time')
    if score is not None and sub_time is not None and len(score):
        # Upstream's `score` is the accumulated submission time at the eval (equal in all
        # 299,735 rows of the real v0.5/v0.6 logs): a score edited alone shows here.
        with np.errstate(invalid='ignore'):
            differ = ~(np.abs(score - sub_time) <= 1e-6 + 1e-6 * np.abs(sub_time))
        if differ.any():
            i = int(np.argmax(differ))
            raise LogFormatError(f'{path}: line {lines[i]}: score = {_show(score[i])} differs from '
                                 f'accumulated_submission_time = {_show(sub_time[i])}; excluded.', path, int(lines[i]))
    for name, (low, high) in schema.bounds.items():
        values = columns.get(name)
        if values is None:
            continue
        with np.errstate(invalid='ignore'):
            bad = ~np.isnan(values) & ((values < low) | (values > high))
        if bad.any():
            i = int(np.argmax(bad))
            raise LogFormatError(f'{path}: line {lines[i]}: {name} = {_show(values[i])} is outside its possible range '
                                 f'[{low:g}, {high:g}]; excluded.', path, int(lines[i]))


def read_eval_csv(path: str, schema: Optional[Schema] = None, max_bytes: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Columns of one eval_measurements.csv as float64 arrays, validated against `schema`.

    Args:
        path: the file.
        schema: what must be there; default: every column, `global_step` and `score` required.
        max_bytes: size cap (None: no cap).

    Raises:
        LogFormatError: the file fails (message names the file and line).
    """
    schema = schema or Schema()
    columns, lines, header = _read(path, schema, max_bytes)
    if header is not None:
        _validate(path, header, columns, lines, schema)
    return columns


def submission_dirs(submission_directory: str) -> Dict[str, List[str]]:
    """Submission name -> its directories (timestamp-suffixed siblings merged in)."""
    if not os.path.isdir(submission_directory):
        raise FileNotFoundError(f'--submission_directory={submission_directory}: directory not found.')
    groups: Dict[str, List[str]] = {}
    for entry in sorted(os.listdir(submission_directory)):
        path = os.path.join(submission_directory, entry)
        if not os.path.isdir(path) or entry.startswith('.'):
            continue
        m = TIMESTAMP_SUFFIX.match(entry)
        groups.setdefault(m.group('name') if m else entry, []).append(path)
    return groups


# workload name -> what its eval files must hold.
SchemaFor = Callable[[str], Schema]


def _iter_trials(submission: str, root: str, report: LoadReport, schema_for: Optional[SchemaFor],
                 max_bytes: Optional[int]) -> Iterator[TrialLog]:
    for study in sorted(os.listdir(root)):
        study_dir = os.path.join(root, study)
        if not os.path.isdir(study_dir) or study.startswith('.'):
            continue  # Hidden: e.g. `algoperf sweep`'s .sweep/ (job list, scripts, logs).
        for entry in sorted(os.listdir(study_dir)):
            wl_dir = os.path.join(study_dir, entry)
            if not os.path.isdir(wl_dir):
                continue
            m = WORKLOAD_DIR.match(entry)
            if m is None:
                report.stray_dirs.append(wl_dir)
                continue
            workload = m.group('workload')
            schema = schema_for(workload) if schema_for else Schema()
            # Numeric trial order (trial_2 before trial_10), never the filesystem's.
            trial_names = [t for t in os.listdir(wl_dir) if TRIAL_DIR.match(t)]
            for trial in sorted(trial_names, key=lambda t: int(TRIAL_DIR.match(t).group('k'))):
                trial_dir = os.path.join(wl_dir, trial)
                if not os.path.isdir(trial_dir):
                    continue
                csv_path = os.path.join(trial_dir, EVAL_CSV)
                if not os.path.isfile(csv_path):
                    report.missing_csv.append(trial_dir)
                    continue
                if os.path.getsize(csv_path) == 0:  # Started, never evaluated: as a missing file.
                    report.empty_csv.append(csv_path)
                    continue
                try:
                    columns = read_eval_csv(csv_path, schema, max_bytes)
                except LogFormatError as e:
                    report.excluded.append(Exclusion(submission, workload, csv_path, e.line, str(e)))
                    continue
                report.trials_read += 1
                yield TrialLog(submission, study, workload, m.group('framework'), trial, csv_path, columns)


def load_submission(name: str, dirs: List[str], report: Optional[LoadReport] = None,
                    schema_for: Optional[SchemaFor] = None, max_bytes: Optional[int] = None) -> List[TrialLog]:
    """All valid trials of one submission (from all of its directories)."""
    report = report if report is not None else LoadReport()
    trials = []
    for root in dirs:
        trials.extend(_iter_trials(name, root, report, schema_for, max_bytes))
    return trials


def max_bytes_from_mb(max_log_mb: Optional[float]) -> Optional[int]:
    """--max_log_mb -> bytes (None or <= 0: no cap)."""
    return None if max_log_mb is None or max_log_mb <= 0 else int(max_log_mb * 1e6)


def load_tree(submission_directory: str, exclude: tuple = (), schema_for: Optional[SchemaFor] = None,
              max_bytes: Optional[int] = max_bytes_from_mb(DEFAULT_MAX_LOG_MB)) -> tuple:
    """(submission -> [TrialLog], LoadReport) for every submission under a directory.

    Args:
      submission_directory: holds one directory per submission.
      exclude: submission names to leave out.
      schema_for: workload -> Schema (columns to read and check); default: all columns,
        `global_step` and `score` required. Reading only what scoring needs is ~3x faster.
      max_bytes: size cap per eval file (None: none).
    """
    report = LoadReport()
    out = {}
    for name, dirs in submission_dirs(submission_directory).items():
        if name in exclude:
            continue
        out[name] = load_submission(name, dirs, report, schema_for, max_bytes)
    for e in report.excluded[:_MAX_WARNINGS]:
        _log.warning('%s', e.reason)
    if len(report.excluded) > _MAX_WARNINGS:
        _log.warning('... and %d more excluded eval files (all listed in warnings.txt).',
                     len(report.excluded) - _MAX_WARNINGS)
    if report.stray_dirs:
        _log.warning('Skipped %d directories that are not <workload>_<framework> (e.g. %s).',
                     len(report.stray_dirs), report.stray_dirs[0])
    if report.missing_csv or report.empty_csv:
        _log.info('Skipped %d trial directories without (or with an empty) %s (e.g. %s).',
                  len(report.missing_csv) + len(report.empty_csv), EVAL_CSV,
                  (report.missing_csv + report.empty_csv)[0])
    return out, report


def metric_bounds(metric_name: str) -> Tuple[float, float]:
    """The possible range of a target metric, by upstream's metric names (substring rule).

    Minimised metrics (losses, ppl, wer, error rates) are >= 0 and may be +inf (an overflowed
    loss or ppl: a diverged run, never reaching); accuracy and mean average precision lie in
    [0, 1], ssim in [-1, 1] (real fastMRI logs hold ssim down to -0.02), bleu in [0, 100]. An
    unknown metric must be finite, so no infinity can reach a target.
    """
    name = metric_name.split('/')[-1]
    if name in ('accuracy', 'mean_average_precision') or name.endswith('_accuracy'):
        return 0.0, 1.0
    if name == 'error_rate':
        return 0.0, 1.0
    if name == 'ssim':
        return -1.0, 1.0
    if name == 'bleu':
        return 0.0, 100.0
    if name in ('loss', 'ce_loss', 'ctc_loss', 'l1_loss', 'wer', 'ppl') or name.endswith('_loss'):
        return 0.0, math.inf
    big = sys.float_info.max
    return (-big, big)
