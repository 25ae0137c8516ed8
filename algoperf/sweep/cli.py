"""`algoperf sweep`: run a whole study grid locally or as a SLURM job array.

    algoperf sweep [run] --submission_path S --experiment_dir D [--tuning_search_space F]
                   [--tuning_ruleset external|self] [--workloads a,b] [--num_studies 3]
                   [--num_tuning_trials 5] [--seed 0] [--executor local|slurm] [...] [-- RUN FLAGS]
    algoperf sweep status D/<submission>
    algoperf sweep score  D/<submission> --output_dir OUT [--allow_incomplete]

Flags after `--` go to every `algoperf run` (e.g. `-- --data_dir=/data --max_global_steps=100`).
Re-running the same `run` skips finished trials and resumes interrupted ones; a different grid
over an existing sweep directory is refused. Bad input is one line naming the flag, exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import List, Optional, Sequence

from algoperf.config import ConfigError


def _run_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument('--submission_path', required=True, help='Submission .py file.')
    p.add_argument('--experiment_dir', required=True, help='Root of the log tree (<dir>/<submission>/study_<k>/...).')
    p.add_argument('--submission_name', help="Directory name of the submission (default: the submission file's folder).")
    p.add_argument('--tuning_ruleset', default='external', choices=['external', 'self'])
    p.add_argument('--tuning_search_space', help='Search-space JSON (external ruleset).')
    p.add_argument('--workloads', help="Comma-separated workloads (default: the benchmark version's base workloads).")
    p.add_argument('--num_studies', type=int, default=3, help='Studies per workload (default 3).')
    p.add_argument('--num_tuning_trials', type=int, default=5, help='Trials per study, external ruleset (default 5).')
    p.add_argument('--seed', type=int, default=0, help='Sweep seed; study seeds derive from it (default 0).')
    p.add_argument('--benchmark_version', help='1.0 (default), 0.6 or 0.5: base workloads and budgets.')
    p.add_argument('--executor', default='local', choices=['local', 'slurm'])
    p.add_argument('--max_parallel', type=int, default=1, help='Jobs at once (local) / array throttle %%N (slurm).')
    p.add_argument('--devices_per_job', type=int, default=1, help='GPUs per local job (torchrun when > 1).')
    p.add_argument('--dry_run', action='store_true', help='Write the job list (and sbatch script); run nothing.')
    g = p.add_argument_group('slurm')
    g.add_argument('--partition')
    g.add_argument('--time', help="Time limit per task, e.g. '12:00:00'.")
    g.add_argument('--gpus_per_node', type=int, default=None, help='GPUs per task; >1 launches torchrun.')
    g.add_argument('--cpus_per_task', type=int)
    g.add_argument('--mem')
    g.add_argument('--sbatch_extra', action='append', default=[], help='Extra #SBATCH line, e.g. --account=abc.')
    g.add_argument('--slurm_config', help='File of `key = value` SLURM settings (flags override it).')


def _split_passthrough(argv: Sequence[str]):
    argv = list(argv)
    if '--' in argv:
        i = argv.index('--')
        return argv[:i], tuple(argv[i + 1:])
    return argv, ()


def _sweep_config(args, run_flags) -> 'SweepConfig':
    from algoperf import benchmark_versions, registry, search_space  # noqa: PLC0415
    from algoperf.sweep.grid import SweepConfig  # noqa: PLC0415

    if not os.path.isfile(args.submission_path):
        raise ConfigError(f'--submission_path={args.submission_path}: file not found.')
    rules = benchmark_versions.get(args.benchmark_version)
    workloads = tuple(w.strip() for w in args.workloads.split(',') if w.strip()) if args.workloads \
        else rules.base_workloads
    for w in workloads:
        registry.get_spec(w)  # UnknownWorkloadError names it.
    if args.tuning_search_space:
        search_space.load(args.tuning_search_space)  # SearchSpaceError names the file.
    name = args.submission_name or os.path.basename(os.path.dirname(os.path.abspath(args.submission_path)))
    return SweepConfig(
        submission_path=os.path.abspath(args.submission_path), experiment_dir=os.path.abspath(args.experiment_dir),
        submission_name=name, tuning_ruleset=args.tuning_ruleset,
        tuning_search_space=os.path.abspath(args.tuning_search_space) if args.tuning_search_space else None,
        workloads=workloads, num_studies=args.num_studies, num_tuning_trials=args.num_tuning_trials,
        seed=args.seed, benchmark_version=args.benchmark_version, run_flags=run_flags)


def _check_same_grid(config, jobs_file: str) -> None:
    from algoperf.sweep.grid import read_job_list  # noqa: PLC0415

    if not os.path.exists(jobs_file):
        return
    old, _ = read_job_list(jobs_file)
    if old != config:
        changed = [f.name for f in dataclasses.fields(config) if getattr(old, f.name) != getattr(config, f.name)]
        raise ConfigError(f'{jobs_file}: a different sweep already lives here (changed: {", ".join(changed)}); '
                          'use another --experiment_dir or --submission_name.')


def _cmd_run(argv: Sequence[str]) -> int:
    from algoperf.sweep import grid, local, slurm  # noqa: PLC0415
    from algoperf.sweep import status as status_lib  # noqa: PLC0415

    own, run_flags = _split_passthrough(argv)
    p = argparse.ArgumentParser(prog='algoperf sweep run', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _run_parser(p)
    args = p.parse_args(own)
    config = _sweep_config(args, run_flags)
    jobs = grid.expand(config)
    jobs_file = os.path.join(config.state_dir, 'jobs.json')
    _check_same_grid(config, jobs_file)
    grid.write_job_list(config, jobs)
    print(f'sweep: {len(jobs)} jobs ({len(config.workloads)} workloads x {config.num_studies} studies x '
          f'{config.trials_per_study} trials) in {config.root}; job list {jobs_file}')
    if args.executor == 'slurm':
        fields = slurm.read_options_file(args.slurm_config) if args.slurm_config else {}
        for key in ('partition', 'time', 'gpus_per_node', 'cpus_per_task', 'mem'):
            if getattr(args, key) is not None:
                fields[key] = getattr(args, key)
        fields['extra'] = tuple(fields.get('extra', ())) + tuple(args.sbatch_extra)
        if args.max_parallel > 1:
            fields['max_parallel'] = args.max_parallel
        opts = slurm.SlurmOptions(**fields)
        todo = [s.job.index for s in status_lib.states(config, jobs) if s.state != status_lib.DONE]
        if args.dry_run or not todo:
            path = os.path.join(config.state_dir, 'sweep.sbatch')
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, 'w') as f:
                f.write(slurm.sbatch_script(config, jobs, jobs_file, opts))
            print(f'sweep: {"nothing left to run" if not todo else "dry run"}; sbatch script {path}')
            return 0
        job_id = slurm.submit(config, jobs, jobs_file, opts, indices=todo if len(todo) < len(jobs) else None)
        print(f'sweep: submitted SLURM array job {job_id} ({len(todo)} tasks); '
              f'follow it with `algoperf sweep status {config.root}`')
        return 0
    if args.dry_run:
        return 0
    report = local.run_local(config, jobs, max_parallel=args.max_parallel, devices_per_job=args.devices_per_job)
    final = status_lib.states(config, jobs)
    print(status_lib.table(config, final))
    print(f'sweep: ran {len(report.ran)} jobs, skipped {len(report.skipped)} finished; '
          f'{report.wall_sec:.1f}s wall, {report.overhead_sec:.2f}s outside the jobs')
    failed = status_lib.failures(final)
    bad_exits = [j for j in jobs if report.returncodes.get(j.index, 0) != 0
                 and status_lib.job_state(config, j).state != status_lib.FAILED]
    for line in failed:
        print(f'FAILED {line}')
    for j in bad_exits:
        print(f'FAILED {j.name}: exit {report.returncodes[j.index]} without a result (log: {j.log_path(config)})')
    return 1 if failed or bad_exits else 0


def _root_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument('root', help='The sweep directory: <experiment_dir>/<submission>.')
    return p


def _load(root: str):
    from algoperf.sweep.grid import read_job_list  # noqa: PLC0415

    return read_job_list(os.path.join(os.path.abspath(root), '.sweep', 'jobs.json'))


def _cmd_status(argv: Sequence[str]) -> int:
    from algoperf.sweep import status as status_lib  # noqa: PLC0415

    args = _root_parser('algoperf sweep status').parse_args(argv)
    config, jobs = _load(args.root)
    states = status_lib.states(config, jobs)
    print(status_lib.table(config, states))
    for line in status_lib.failures(states):
        print(f'FAILED {line}')
    return 0


def _cmd_score(argv: Sequence[str]) -> int:
    from algoperf.sweep import status as status_lib  # noqa: PLC0415
    from scoring.cli import main as score_main  # noqa: PLC0415

    p = _root_parser('algoperf sweep score')
    p.add_argument('--output_dir', required=True)
    p.add_argument('--allow_incomplete', action='store_true', help='Score even if jobs are not finished.')
    args, rest = p.parse_known_args(argv)
    config, jobs = _load(args.root)
    states = status_lib.states(config, jobs)
    unfinished = [s for s in states if s.state not in (status_lib.DONE, status_lib.FAILED)]
    if unfinished and not args.allow_incomplete:
        raise ConfigError(f'{config.root}: {len(unfinished)} of {len(jobs)} jobs are not finished '
                          f'(e.g. {unfinished[0].job.name}: {unfinished[0].state}); pass --allow_incomplete to score anyway.')
    flags = ['--submission_directory', os.path.dirname(config.root), '--output_dir', args.output_dir,
             '--num_studies', str(config.num_studies), '--num_trials', str(config.trials_per_study)]
    if config.tuning_ruleset == 'self':
        flags.append('--self_tuning_ruleset')
    if config.benchmark_version:
        flags += ['--benchmark_version', config.benchmark_version]
    from algoperf import benchmark_versions  # noqa: PLC0415

    if set(config.workloads) != set(benchmark_versions.get(config.benchmark_version).base_workloads):
        flags += ['--workloads', ','.join(config.workloads)]  # A dev grid (e.g. digits) or a subset.
    return score_main(flags + list(rest))


def _cmd_task(argv: Sequence[str]) -> int:
    from algoperf.sweep import slurm  # noqa: PLC0415
    from algoperf.sweep.grid import read_job_list  # noqa: PLC0415

    p = argparse.ArgumentParser(prog='algoperf sweep task')
    p.add_argument('--jobs', required=True)
    p.add_argument('--index', type=int, required=True)
    p.add_argument('--gpus_per_node', type=int, default=0)
    args = p.parse_args(argv)
    _, jobs = read_job_list(args.jobs)
    slurm.exec_task(jobs, args.index, args.gpus_per_node)
    return 0  # Not reached: exec_task replaces the process.


COMMANDS = {'run': _cmd_run, 'status': _cmd_status, 'score': _cmd_score, 'task': _cmd_task}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else 'run'
    rest = argv[1:] if argv and argv[0] in COMMANDS else argv
    try:
        return COMMANDS[command](rest)
    except ConfigError as e:
        print(f'algoperf sweep {command}: error: {e}', file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001
        from algoperf.registry import UnknownWorkloadError  # noqa: PLC0415
        from algoperf.search_space import SearchSpaceError  # noqa: PLC0415
        from algoperf.benchmark_versions import UnknownVersionError  # noqa: PLC0415

        if isinstance(e, (UnknownWorkloadError, SearchSpaceError, UnknownVersionError)):
            print(f'algoperf sweep {command}: error: {e}', file=sys.stderr)
            return 2
        raise
