"""Reading AlgoPerf log trees (upstream's layout, as real trees actually are).

    <submission_directory>/<submission>/<study>/<workload>_<framework>/trial_<k>/eval_measurements.csv

What real trees contain, and what is done with it:
  * `<submission>-YYYY-MM-DD-HH-MM-SS` siblings (runs started with --append_timestamp): merged into
    `<submission>`, as upstream's `get_experiment_df` does.
  * trial directories without eval_measurements.csv (a run that never evaluated): skipped, counted.
  * stray `trial_*` directories directly under a study (not under a workload dir): skipped with a warning.
  * directories that are not `<workload>_<jax|pytorch>`: skipped with a warning.
  * NaN metrics (diverged runs): kept; NaN never reaches a target.
  * variant workload directories: loaded; whether they count is the scorer's decision.
A CSV that cannot be parsed raises `LogFormatError` naming the file.

Speed: files are parsed with the csv module (a few hundred microseconds each) rather than
`pandas.read_csv` (about a millisecond of fixed cost each), since a leaderboard tree holds
thousands of small files.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import re
from typing import Callable, Collection, Dict, Iterator, List, Optional

import numpy as np

_log = logging.getLogger(__name__)

TIMESTAMP_SUFFIX = re.compile(r'^(?P<name>.+)-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}$')
WORKLOAD_DIR = re.compile(r'^(?P<workload>.+)_(?P<framework>jax|pytorch)$')
TRIAL_DIR = re.compile(r'^trial_(?P<k>\d+)$')
EVAL_CSV = 'eval_measurements.csv'


class LogFormatError(ValueError):
    """A log file that cannot be read; the message names the file."""


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


@dataclasses.dataclass
class LoadReport:
    """What was skipped while loading, for the user and for --strict."""

    trials_read: int = 0
    missing_csv: List[str] = dataclasses.field(default_factory=list)
    stray_dirs: List[str] = dataclasses.field(default_factory=list)
    empty_csv: List[str] = dataclasses.field(default_factory=list)


def _to_float(text: str) -> float:
    if not text:
        return math.nan
    try:
        return float(text)
    except ValueError:
        return {'True': 1.0, 'False': 0.0}.get(text, math.nan)


def read_eval_csv(path: str, usecols: Optional[Collection[str]] = None) -> Dict[str, np.ndarray]:
    """Columns of one eval_measurements.csv as float64 arrays (all, or those in `usecols`)."""
    try:
        with open(path, newline='') as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise LogFormatError(f'{path}: cannot read ({e}).') from e
    except csv.Error as e:
        raise LogFormatError(f'{path}: malformed CSV ({e}).') from e
    if not rows:
        return {}
    header = rows[0]
    numbered = [(i, r) for i, r in enumerate(rows[1:], start=2) if r]  # Blank lines skipped, numbers kept.
    body = [r for _, r in numbered]
    if len(set(header)) != len(header):
        raise LogFormatError(f'{path}: duplicate column names in the header.')
    for i, row in numbered:
        if len(row) != len(header):
            raise LogFormatError(f'{path}: line {i} has {len(row)} fields, the header has {len(header)}.')
    wanted = [(j, name) for j, name in enumerate(header) if usecols is None or name in usecols]
    return {name: np.array([_to_float(r[j]) for r in body], dtype=np.float64) for j, name in wanted}


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


# workload name -> the columns to convert (None: all of them).
ColumnsFor = Callable[[str], Optional[Collection[str]]]


def _iter_trials(submission: str, root: str, report: LoadReport, columns_for: Optional[ColumnsFor]) -> Iterator[TrialLog]:
    for study in sorted(os.listdir(root)):
        study_dir = os.path.join(root, study)
        if not os.path.isdir(study_dir):
            continue
        for entry in sorted(os.listdir(study_dir)):
            wl_dir = os.path.join(study_dir, entry)
            if not os.path.isdir(wl_dir):
                continue
            m = WORKLOAD_DIR.match(entry)
            if m is None:
                report.stray_dirs.append(wl_dir)
                continue
            # Numeric trial order (trial_2 before trial_10): it breaks ties between trials
            # (upstream uses whatever order the filesystem lists).
            trial_names = [t for t in os.listdir(wl_dir) if TRIAL_DIR.match(t)]
            for trial in sorted(trial_names, key=lambda t: int(TRIAL_DIR.match(t).group('k'))):
                trial_dir = os.path.join(wl_dir, trial)
                if not os.path.isdir(trial_dir):
                    continue
                csv_path = os.path.join(trial_dir, EVAL_CSV)
                if not os.path.isfile(csv_path):
                    report.missing_csv.append(trial_dir)
                    continue
                usecols = columns_for(m.group('workload')) if columns_for else None
                columns = read_eval_csv(csv_path, usecols)
                report.trials_read += 1
                if not columns or not any(len(v) for v in columns.values()):
                    report.empty_csv.append(csv_path)
                yield TrialLog(submission, study, m.group('workload'), m.group('framework'), trial, csv_path, columns)


def load_submission(name: str, dirs: List[str], report: Optional[LoadReport] = None,
                    columns_for: Optional[ColumnsFor] = None) -> List[TrialLog]:
    """All trials of one submission (from all of its directories)."""
    report = report if report is not None else LoadReport()
    trials = []
    for root in dirs:
        trials.extend(_iter_trials(name, root, report, columns_for))
    return trials


def load_tree(submission_directory: str, exclude: tuple = (), columns_for: Optional[ColumnsFor] = None) -> tuple:
    """(submission -> [TrialLog], LoadReport) for every submission under a directory.

    Args:
      submission_directory: holds one directory per submission.
      exclude: submission names to leave out.
      columns_for: workload -> column names to read (None: all); reading only what
        scoring needs is ~3x faster on a leaderboard tree.
    """
    report = LoadReport()
    out = {}
    for name, dirs in submission_dirs(submission_directory).items():
        if name in exclude:
            continue
        out[name] = load_submission(name, dirs, report, columns_for)
    if report.stray_dirs:
        _log.warning('Skipped %d directories that are not <workload>_<framework> (e.g. %s).',
                     len(report.stray_dirs), report.stray_dirs[0])
    if report.missing_csv:
        _log.info('Skipped %d trial directories without %s (e.g. %s).',
                  len(report.missing_csv), EVAL_CSV, report.missing_csv[0])
    return out, report
