"""`algoperf score` (also `python -m scoring`): score a directory of submissions.

    algoperf score --submission_directory DIR --output_dir OUT [--self_tuning_ruleset]
                   [--workload_targets F] [--held_out_workloads F] [--strict]
                   [--exclude_submissions a,b] [--reference_submission NAME]

Flags follow upstream's `scoring/score_submissions.py`. Targets come from this package's
workload specs (v0.6) unless `--workload_targets` names an upstream targets JSON.
Bad input prints one line naming the file or flag and exits 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Optional, Sequence

from scoring import logs, targets as targets_lib
from scoring.score import ScoringError

_log = logging.getLogger('scoring')


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument('--submission_directory', required=True,
                   help='Directory with one sub-directory per submission (<sub>/<study>/<workload>_<fw>/trial_<k>).')
    p.add_argument('--output_dir', required=True, help='Where CSVs and plots are written.')
    p.add_argument('--self_tuning_ruleset', action='store_true', help='Self-tuning: no per-study trial count check.')
    p.add_argument('--workload_targets', help='Upstream-format targets JSON (default: our v0.6 workload specs).')
    p.add_argument('--held_out_workloads', help='JSON list of held-out variants (v0.5 rule); overrides the targets file.')
    p.add_argument('--strict', action='store_true', help='Fail on missing workloads or wrong study/trial counts.')
    p.add_argument('--exclude_submissions', default='', help='Comma-separated submission names to leave out.')
    p.add_argument('--reference_submission', help='Also write speedups.csv: geometric-mean speedup vs this one.')
    p.add_argument('--num_studies', type=int, default=None,
                   help='Expected studies per workload (default: 5 for v0.5 targets, else 3).')
    p.add_argument('--num_trials', type=int, default=5, help='Expected trials per study (external ruleset).')
    p.add_argument('--no_plots', action='store_true', help='Skip the PNG/SVG plots.')
    p.add_argument('--compute_performance_profiles', action='store_true',
                   help='Accepted for upstream compatibility (profiles are always computed).')
    return p


def _speedups(result, targets, reference: str, self_tuning: bool):
    from algoperf import registry
    from scoring import performance_profile

    budgets = {w: registry.get_spec(w).max_allowed_runtime_sec for w in targets.base_workloads}
    return performance_profile.speedups(result.times, reference, budgets, 1.5 if self_tuning else 1.0,
                                        targets.base_workloads)


def run(args: argparse.Namespace) -> int:
    from scoring import report, score

    targets = targets_lib.from_json(args.workload_targets) if args.workload_targets else targets_lib.from_specs()
    if args.held_out_workloads:
        held_out = tuple(targets_lib.read_held_out(args.held_out_workloads))
        unknown = [w for w in held_out if targets.get(w) is None]
        if unknown:
            raise targets_lib.TargetsError(f'{args.held_out_workloads}: no target for {", ".join(unknown)}.')
        targets = targets_lib.Targets(targets.by_workload, targets.base_workloads, held_out, targets.source,
                                      targets.benchmark_version)
    num_studies = args.num_studies or (5 if targets.benchmark_version == '0.5' else 3)
    start = time.perf_counter()
    exclude = [s for s in args.exclude_submissions.split(',') if s]
    result = score.score_tree(args.submission_directory, targets, self_tuning=args.self_tuning_ruleset,
                              strict=args.strict, exclude=exclude, num_studies=num_studies,
                              num_trials=args.num_trials)
    elapsed = time.perf_counter() - start
    if args.reference_submission and args.reference_submission not in result.scores.index:
        raise ScoringError(f'--reference_submission={args.reference_submission}: not among the scored submissions '
                           f'({", ".join(sorted(result.scores.index))}).')
    speedups = _speedups(result, targets, args.reference_submission, args.self_tuning_ruleset) \
        if args.reference_submission else None
    written = report.write_outputs(result, targets, args.output_dir, speedups)
    if not args.no_plots:
        from scoring import plots

        written += plots.performance_profile_plot(result, args.output_dir)
        written += plots.time_to_target_chart(result, args.output_dir)
    r = result.load_report
    print(report.leaderboard_table(result))
    print(f'\nScored {len(result.scores)} submissions from {r.trials_read} trial logs in {elapsed:.2f} s '
          f'(targets: {targets.source}; held-out: {", ".join(targets.held_out_workloads) or "none"}; '
          f'{len(r.missing_csv)} trial dirs without eval logs and {len(r.stray_dirs)} stray dirs skipped; '
          f'{len(result.warnings)} count warnings).')
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
