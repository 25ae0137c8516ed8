"""Build the compact extracts of the AlgoPerf v0.5 and v0.6 leaderboard logs used by tests/scoring.

The full logs (`algoperf_v05/{external_tuning,self_tuning}`, about 140 MB; `algoperf_v06/...`,
8 MB) are not something users have, but reproducing the published scores from them is the
strongest check the scorer has. This script keeps what the scorer's result depends on and packs
each version into one deterministic archive (paths relative to --out_dir):

    algoperf_v05_extract.tar.gz
        algoperf_v05/<ruleset>/<submission>/<study>/<workload>_<framework>/trial_<k>/
        eval_measurements.csv
    workload_targets_v05.json             byte copy of upstream's frozen targets
    held_out_workloads_algoperf_v05.json  byte copy of upstream's held-out list
    algoperf_v06_extract.tar.gz           the same for algoperf_v06/ (March-2025 leaderboard)
    workload_targets_v06_leaderboard_8workloads.json  byte copy (upstream's file less finewebedu_lm)

    python scripts/make_scoring_extract.py \
        [--logs_dir ../shared/algoperf_logs] [--out_dir tests/scoring/data] [--versions v05,v06]

It also writes the package's v1.0 targets file from our specs (scoring/targets.py):

    python scripts/make_scoring_extract.py --write_targets 1.0   # -> scoring/workload_targets_v1.0.json

What is kept, and why each cut leaves every score and every time-to-target unchanged:
  * Directories: only `<workload>_<jax|pytorch>` dirs of scored workloads (the base and
    held-out workloads of the targets JSON), names verbatim. Other variant dirs (e.g.
    `wmt_post_ln`) and stray `trial_*` dirs directly under a study never reach the
    scored columns (they do appear as extra columns of the unscored `times` table).
  * Trials: only those with an eval_measurements.csv. A trial without one adds nothing to
    its study, and a study or workload with no CSV at all is absent from the scorer's
    grouping either way, so what is missing in the logs stays missing here (amos's single
    criteo1tb trial, caspr_adaptive's missing workloads, lawa_ema's 3 deepspeech studies).
  * Columns: `global_step` (for a reader), `score` (the time) and `validation/<metric>`
    (the target metric); nothing else is read. Cells are copied as text, never re-printed,
    so every float round-trips bit for bit. A column the source lacks stays absent.
  * Rows of a trial that reaches the target: the first row, then the rows up to and
    including the first reaching one, minus the leading rows that every reaching trial of
    the same (submission, study, workload) has before reaching. The scorer reads one row
    per trial, the first reaching one: its `score` (kept verbatim) and its eval index,
    which it only ever compares with the indices of the other trials of that study (the
    reaching trial with the smallest index wins, ties to the smallest time).
    Dropping rows 1..s from every reaching trial, with s one less than the study's
    smallest first-reaching index, shifts all those indices by the same s and drops no
    reaching row, so the winner and its time are unchanged. Truncation alone leaves about
    2 MB compressed (fastmri, vit and wmt trials reach after 20-60 evals); the shift brings
    it to about a quarter of that. Row 0 is kept so every file still starts at the run's
    first eval.
  * Rows of a trial that never reaches it: the first row, the first row whose metric is
    NaN (a diverged run), and the last row, in their original order. Any subset of
    non-reaching rows gives the same answer (no reaching eval: inf); these three keep the
    shape of a real run (start, divergence, end).
  * Empty files (no header) and header-only files are kept as such.
"Reaches" is decided here, independently of scoring/time_to_target.py (so a bug there
cannot shape its own test data): `>=` for a maximised metric, `<=` for a minimised one,
NaN or text never; the direction comes from scoring.targets.

The archive is byte-reproducible: members sorted by path, no directory entries (extraction
creates them), ustar headers with fixed mtime/uid/gid/mode, and a gzip header without a
name or timestamp.
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import gzip
import io
import json
import math
import os
import re
import shutil
import tarfile

from scoring import targets as targets_lib

RULESETS = ('external_tuning', 'self_tuning')
# version -> (root directory in the logs and in the archive, targets file, other files copied)
VERSIONS = {
    'v05': ('algoperf_v05', 'workload_targets_v05.json', ('held_out_workloads_algoperf_v05.json',)),
    'v06': ('algoperf_v06', 'workload_targets_v06_leaderboard_8workloads.json', ()),
}
TARGETS_JSON = 'workload_targets_v05.json'
HELD_OUT_JSON = 'held_out_workloads_algoperf_v05.json'
ARCHIVE = 'algoperf_v05_extract.tar.gz'
ARCHIVE_ROOT = 'algoperf_v05'
EVAL_CSV = 'eval_measurements.csv'
# The same directory grammar as scoring/logs.py, restated so the data does not depend on it.
WORKLOAD_DIR = re.compile(r'^(?P<workload>.+)_(?P<framework>jax|pytorch)$')
TRIAL_DIR = re.compile(r'^trial_\d+$')
TIMESTAMP_SUFFIX = re.compile(r'-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}$')
# Any constant makes rebuilds identical; a real date avoids tools warning about 1970.
MTIME = 1_717_200_000  # 2024-06-01, around the v0.5 results.

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class _Trial:
    header: list[str]
    body: list[list[str]]
    target: targets_lib.Target
    first_reaching: int | None


def _to_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def reaches(text: str, target: targets_lib.Target) -> bool:
    """Whether one metric cell reaches the target (NaN and non-numbers never do)."""
    value = _to_float(text)
    if math.isnan(value):
        return False
    return (
        value >= target.validation_target
        if target.higher_is_better
        else value <= target.validation_target
    )


def _parse(path: str, target: targets_lib.Target) -> _Trial | None:
    """One eval_measurements.csv; None for an empty file (kept as is)."""
    with open(path, newline='') as f:
        rows = list(csv.reader(f))
    if not rows:
        return None
    header, body = rows[0], [r for r in rows[1:] if r]  # The scorer skips blank lines too.
    if any(len(r) != len(header) for r in body):
        raise ValueError(f'{path}: a row has a different number of fields than the header.')
    first = None
    if target.column in header:
        j = header.index(target.column)
        first = next((i for i, r in enumerate(body) if reaches(r[j], target)), None)
    return _Trial(header, body, target, first)


def _kept_rows(trial: _Trial, shift: int) -> list[list[str]]:
    body, first = trial.body, trial.first_reaching
    if first is not None:
        return body[:1] + body[1 + shift : first + 1]
    picks = {0, len(body) - 1} if body else set()
    if trial.target.column in trial.header:
        j = trial.header.index(trial.target.column)
        first_nan = next((i for i, r in enumerate(body) if math.isnan(_to_float(r[j]))), None)
        if first_nan is not None:
            picks.add(first_nan)
    return [body[i] for i in sorted(picks)]


def _to_csv(trial: _Trial, rows: list[list[str]]) -> bytes:
    keep = [c for c in ('global_step', 'score', trial.target.column) if c in trial.header]
    cols = [trial.header.index(c) for c in keep]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator='\n')
    writer.writerow(keep)
    writer.writerows([r[j] for j in cols] for r in rows)
    return out.getvalue().encode()


def collect(logs_dir: str, targets: targets_lib.Targets, archive_root: str = ARCHIVE_ROOT) -> dict[str, bytes]:
    """Archive path -> reduced eval_measurements.csv for every scored trial of both rulesets.

    Args:
        logs_dir: Directory holding `<archive_root>/<ruleset>/...`.
        targets: Targets and the scored (base and held-out) workloads.
        archive_root: `algoperf_v05` or `algoperf_v06`.

    Returns:
        Member name -> file contents.
    """
    scored = set(targets.base_workloads) | set(targets.held_out_workloads)
    root = os.path.join(logs_dir, archive_root)
    trials: dict[str, _Trial | None] = {}
    # (ruleset, submission, study, workload) -> member names
    studies: dict[tuple, list[str]] = collections.defaultdict(list)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if EVAL_CSV not in filenames:
            continue
        rel = os.path.relpath(dirpath, root).split(os.sep)
        # <ruleset>/<submission>/<study>/<workload>_<framework>/trial_<k>: anything else
        # (e.g. a trial_* dir directly under a study) is not read by the scorer.
        if len(rel) != 5 or rel[0] not in RULESETS or not TRIAL_DIR.match(rel[4]):
            continue
        m = WORKLOAD_DIR.match(rel[3])
        if m is None or m.group('workload') not in scored:
            continue
        name = '/'.join([archive_root, *rel, EVAL_CSV])
        trials[name] = _parse(
            os.path.join(dirpath, EVAL_CSV), targets.by_workload[m.group('workload')]
        )
        # The scorer groups a study's trials across frameworks and timestamped sibling dirs.
        submission = TIMESTAMP_SUFFIX.sub('', rel[1])
        studies[(rel[0], submission, rel[2], m.group('workload'))].append(name)

    members = {}
    for names in studies.values():
        firsts = [trials[n].first_reaching for n in names if trials[n] is not None]
        firsts = [i for i in firsts if i is not None]
        shift = max(min(firsts) - 1, 0) if firsts else 0
        for n in names:
            t = trials[n]
            members[n] = b'' if t is None else _to_csv(t, _kept_rows(t, shift))
    return members


def write_archive(members: dict[str, bytes], path: str) -> None:
    """A gzipped tar of `members`, identical bytes for identical input."""
    buf = io.BytesIO()
    # ustar: the longest path (~120 chars) fits its prefix/name split, so no pax records.
    with (
        gzip.GzipFile(filename='', mode='wb', fileobj=buf, compresslevel=9, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode='w', format=tarfile.USTAR_FORMAT) as tar,
    ):
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            info.mtime, info.mode = MTIME, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ''
            tar.addfile(info, io.BytesIO(members[name]))
    with open(path, 'wb') as f:
        f.write(buf.getvalue())


def write_targets(version: str, path: str | None = None) -> str:
    """Writes our specs' targets for `version` in upstream's format; returns the path."""
    payload = targets_lib.spec_targets_json(version)
    path = path or os.path.join(_REPO, 'scoring', f'workload_targets_v{payload["benchmark_version"]}.json')
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(json.dumps(payload, indent=2) + '\n')
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument(
        '--logs_dir',
        default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '..', 'shared',
                             'algoperf_logs'),
        help='holds algoperf_v05/, algoperf_v06/ and targets/ (upstream submissions_algorithms logs)',
    )
    parser.add_argument('--out_dir', default=os.path.join(_REPO, 'tests', 'scoring', 'data'))
    parser.add_argument('--versions', default=','.join(VERSIONS), help='extracts to build (v05, v06)')
    parser.add_argument('--write_targets', metavar='VERSION',
                        help="only write scoring/workload_targets_v<VERSION>.json from our specs (e.g. 1.0)")
    args = parser.parse_args(argv)

    if args.write_targets:
        print(write_targets(args.write_targets))
        return
    targets_dir = os.path.join(args.logs_dir, 'targets')
    os.makedirs(args.out_dir, exist_ok=True)
    for version in args.versions.split(','):
        root, targets_json, extra = VERSIONS[version]
        targets = targets_lib.from_json(os.path.join(targets_dir, targets_json))
        members = collect(args.logs_dir, targets, root)
        archive = os.path.join(args.out_dir, f'{root}_extract.tar.gz')
        write_archive(members, archive)
        for name in (targets_json, *extra):
            shutil.copyfile(os.path.join(targets_dir, name), os.path.join(args.out_dir, name))
        raw_mb = sum(len(v) for v in members.values()) / 1e6
        size_kb = os.path.getsize(archive) / 1e3
        print(f'{archive}: {len(members)} trials, {raw_mb:.2f} MB of CSV, {size_kb:.0f} kB.')


if __name__ == '__main__':
    main()
