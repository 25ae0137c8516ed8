"""`algoperf score` (also `python -m scoring`): score a directory of submissions.

    algoperf score --submission_directory DIR --output_dir OUT [--benchmark_version 1.0|0.6|0.5]
                   [--self_tuning_ruleset] [--workload_targets F] [--held_out_workloads F]
                   [--workloads a,b] [--strict] [--exclude_submissions a,b]
                   [--reference_submission NAME] [--max_log_mb 64]

Flags follow upstream's `scoring/score_submissions.py`. Targets come from this package's
workload specs under the rules of `--benchmark_version` (default 1.0: nine base workloads,
`finewebedu_lm` included, no held-out variants), or from an upstream targets JSON
(`--workload_targets`), whose declared `benchmark_version` is then the version unless the flag
is given. `--workloads` scores the named workloads instead (e.g. `digits,mnist` for dev runs).
Eval files that fail validation (non-numeric, non-finite or negative times, times running
backwards, a missing target column, over `--max_log_mb`) are excluded with a warning naming
file and line. Bad input prints one line naming the file or flag and exits 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Optional, Sequence

from algoperf import benchmark_versions
from scoring import logs, targets as targets_lib
from scoring.score import ScoringError

_log = logging.getLogger('scoring')


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument('--submission_directory', required=True,
                   help='Directory with one sub-directory per submission (<sub>/<study>/<workload>_<fw>/trial_<k>).')
    p.add_argument('--output_dir', required=True, help='Where CSVs and plots are written.')
    p.add_argument('--benchmark_version', default=None,
                   help=f'Rules to score under: {", ".join(benchmark_versions.VERSIONS)} (default: the version a '
                        f'--workload_targets file declares, else {benchmark_versions.DEFAULT_VERSION}). Picks the base '
                        'workloads and held-out variants (with spec targets), the summary step-time rule and the '
                        'speedup budgets.')
    p.add_argument('--self_tuning_ruleset', action='store_true',
                   help="Self-tuning: no per-study trial count check; speedups use the version's budget factor.")
    p.add_argument('--workload_targets',
                   help='Upstream-format targets JSON (default: our workload specs under --benchmark_version).')
    p.add_argument('--held_out_workloads', help='JSON list of held-out variants (v0.5 rule); overrides the targets file.')
    p.add_argument('--workloads', default='',
                   help='Comma-separated workloads to score instead of the base workloads (no held-out gating), '
                        'e.g. digits,mnist; targets from --workload_targets or our specs.')
    p.add_argument('--strict', action='store_true',
                   help='Fail on missing workloads, wrong study/trial counts or any excluded eval file.')
    p.add_argument('--exclude_submissions', default='', help='Comma-separated submission names to leave out.')
    p.add_argument('--reference_submission', help='Also write speedups.csv: geometric-mean speedup vs this one.')
    p.add_argument('--num_studies', type=int, default=None,
                   help='Expected studies per workload (default: 5 for v0.5, else 3).')
    p.add_argument('--num_trials', type=int, default=5, help='Expected trials per study (external ruleset).')
    p.add_argument('--max_log_mb', type=float, default=logs.DEFAULT_MAX_LOG_MB,
                   help='Size cap per eval_measurements.csv in MB; a larger file is excluded with a warning '
                        '(0: no cap).')
    p.add_argument('--no_plots', action='store_true', help='Skip the PNG/SVG plots.')
    p.add_argument('--compute_performance_profiles', action='store_true',
                   help='Accepted for upstream compatibility (profiles are always computed).')
    return p


def _flag_version(value: Optional[str]) -> Optional[benchmark_versions.BenchmarkVersion]:
    if value is None:
        return None
    try:
        return benchmark_versions.get(value)
    except benchmark_versions.UnknownVersionError as e:
        raise targets_lib.TargetsError(str(e)) from None


def resolve_targets(args: argparse.Namespace):
    """(targets, version) from --workload_targets / --benchmark_version / --workloads / --held_out_workloads."""
    version = _flag_version(args.benchmark_version)
    workloads = tuple(w.strip() for w in args.workloads.split(',') if w.strip())
    if args.workload_targets:
        targets = targets_lib.from_json(args.workload_targets)
        if version is None:
            try:
                version = benchmark_versions.get(targets.benchmark_version)
            except benchmark_versions.UnknownVersionError:
                raise targets_lib.TargetsError(
                    f'{args.workload_targets}: benchmark_version {targets.benchmark_version!r} is not one of '
                    f'{", ".join(benchmark_versions.VERSIONS)}; pass --benchmark_version.') from None
        if workloads:
            unknown = [w for w in workloads if targets.get(w) is None]
            if unknown:
                raise targets_lib.TargetsError(f'--workloads: {args.workload_targets} has no target for '
                                               f'{", ".join(unknown)}.')
            targets = targets_lib.Targets(targets.by_workload, workloads, (), targets.source, targets.benchmark_version)
    else:
        version = version or benchmark_versions.get()
        targets = targets_lib.from_specs(version.name, workloads or None)
        unknown = [w for w in workloads if targets.get(w) is None]
        if unknown:
            raise targets_lib.TargetsError(f'--workloads: no workload spec named {", ".join(unknown)}.')
    if args.held_out_workloads:
        held_out = tuple(targets_lib.read_held_out(args.held_out_workloads))
        unknown = [w for w in held_out if targets.get(w) is None]
        if unknown:
            raise targets_lib.TargetsError(f'{args.held_out_workloads}: no target for {", ".join(unknown)}.')
        targets = targets_lib.Targets(targets.by_workload, targets.base_workloads, held_out, targets.source,
                                      targets.benchmark_version)
    return targets, version


def run(args: argparse.Namespace) -> int:
    from scoring import performance_profile, report, score

    if args.max_log_mb < 0:
        raise ScoringError(f'--max_log_mb={args.max_log_mb:g}: must be >= 0 (0: no cap).')
    targets, version = resolve_targets(args)
    num_studies = args.num_studies or (5 if version.name == '0.5' else 3)
    start = time.perf_counter()
    exclude = [s for s in args.exclude_submissions.split(',') if s]
    result = score.score_tree(args.submission_directory, targets, self_tuning=args.self_tuning_ruleset,
                              strict=args.strict, exclude=exclude, num_studies=num_studies,
                              num_trials=args.num_trials, version=version.name,
                              max_bytes=logs.max_bytes_from_mb(args.max_log_mb))
    elapsed = time.perf_counter() - start
    if args.reference_submission and args.reference_submission not in result.scores.index:
        raise ScoringError(f'--reference_submission={args.reference_submission}: not among the scored submissions '
                           f'({", ".join(sorted(result.scores.index))}).')
    speedups = None
    if args.reference_submission:
        factor = version.self_tuning_budget_factor if args.self_tuning_ruleset else 1.0
        speedups = performance_profile.speedups(result.times, args.reference_submission,
                                                score.budgets(targets, version), factor, targets.base_workloads)
    try:
        written = report.write_outputs(result, targets, args.output_dir, speedups)
        if not args.no_plots:
            from scoring import plots

            written += plots.performance_profile_plot(result, args.output_dir)
            written += plots.time_to_target_chart(result, args.output_dir)
    except OSError as e:
        raise ScoringError(f'--output_dir={args.output_dir}: cannot write ({e.strerror or e}).') from e
    r = result.load_report
    print(report.leaderboard_table(result))
    print(f'\nScored {len(result.scores)} submissions from {r.trials_read} trial logs in {elapsed:.2f} s '
          f'(benchmark version {version.name}: {len(targets.base_workloads)} base workloads; targets: '
          f'{targets.source}; held-out: {", ".join(targets.held_out_workloads) or "none"}; '
          f'{len(r.excluded)} eval files excluded as invalid; '
          f'{len(r.missing_csv) + len(r.empty_csv)} trial dirs without eval logs and {len(r.stray_dirs)} stray dirs '
          f'skipped; {len(result.warnings) - len(r.excluded)} count warnings).')
    if result.ignored_line:
        print(result.ignored_line)
    if speedups is not None:
        print('Geometric-mean speedup vs', args.reference_submission + ':',
              ', '.join(f'{n} {v:.3f}' for n, v in speedups['geometric_mean'].sort_values(ascending=False).items()))
    print(f'Wrote {len(written)} files to {args.output_dir}')
    return 0


def main(argv: Optional[Sequence[str]] = None, prog: str = 'algoperf score') -> int:
    parser = add_arguments(argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format='%(levelname).1s %(name)s] %(message)s')
    try:
        return run(args)
    except (FileNotFoundError, targets_lib.TargetsError, logs.LogFormatError, ScoringError, KeyError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f'{prog}: error: {message}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
