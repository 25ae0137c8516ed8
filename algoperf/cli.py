"""Command line: `algoperf run | list | score | profile | bench` (also `python -m algoperf ...`).

`run` takes upstream `submission_runner.py` flags with absl syntax:
`--flag=value`, `--flag value`, `--flag` / `--noflag` for booleans. Calling
with flags and no subcommand means `run`, so upstream command lines work after
replacing `python submission_runner.py` with `python -m algoperf`.

Errors in input (flags, files, names) print one line and exit 2; a run in
which any trial failed exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import List, Optional, Sequence

from algoperf.config import ConfigError, RunConfig
from algoperf.errors import UserError

_log = logging.getLogger('algoperf')

_TRUE = {'1', 'true', 't', 'yes', 'y'}
_FALSE = {'0', 'false', 'f', 'no', 'n'}


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f'expected true/false, got {text!r}')


def _absl_to_argparse(argv: Sequence[str], bool_flags: set) -> List[str]:
    """Rewrite absl boolean forms (--flag, --noflag) as --flag=true/false."""
    out = []
    for arg in argv:
        if arg.startswith('--') and '=' not in arg:
            name = arg[2:]
            if name in bool_flags:
                out.append(f'--{name}=true')
                continue
            if name.startswith('no') and name[2:] in bool_flags:
                out.append(f'--{name[2:]}=false')
                continue
        out.append(arg)
    return out


_HELP = {
    'submission_path': 'Python file with the submission functions.',
    'workload': 'Registered workload name (see `algoperf list`).',
    'framework': "Only 'pytorch' (accepted for upstream compatibility).",
    'experiment_dir': 'Root directory for all experiment logs.',
    'experiment_name': 'Sub-directory name; may contain "/" (e.g. myalgo/study_0).',
    'tuning_ruleset': "'external' (search space, 1x budget) or 'self' (hyperparameters=None, 1.5x budget).",
    'tuning_search_space': 'Search-space JSON (external ruleset only).',
    'num_tuning_trials': 'Number of hyperparameter points (trials) to run.',
    'data_dir': 'Dataset location.',
    'imagenet_v2_data_dir': 'ImageNet-v2 location (test split of ImageNet workloads).',
    'librispeech_tokenizer_vocab_path': 'SentencePiece model for LibriSpeech.',
    'torch_compile': "torch.compile the model/loss where upstream does (on the clock).",
    'save_checkpoints': 'Checkpoint at every eval (resume with --resume_last_run).',
    'save_intermediate_checkpoints': 'Keep every checkpoint, not only the latest.',
    'resume_last_run': 'Continue the experiment in an existing directory.',
    'resume_anyway': ('Resume even if --submission_path, --rng_seed or the search space differ from what the '
                      'experiment recorded (flags_0.json, hparams.json); refused otherwise.'),
    'append_timestamp': 'Append -YYYY-MM-DD-HH-MM-SS to the experiment name.',
    'use_wandb': 'Log the trial scalars, flags and hyperparameters to Weights & Biases (WANDB_MODE=offline works offline).',
    'use_tensorboard': 'TensorBoard event files in each trial directory (default: on when tensorboard is installed).',
    'benchmark_version': "Benchmark rules: '1.0' (4x A100 budgets, TF32; default), '0.6' or '0.5' (8x V100).",
    'profile': 'Print wall-clock totals per harness action after each trial.',
    'max_global_steps': 'Stop after this many steps (with a final eval).',
    'overwrite': 'Delete an existing experiment directory first.',
    'hparam_start_index': 'First trial index (0-based) of the search to run.',
    'hparam_end_index': 'End trial index (exclusive) of the search to run.',
    'rng_seed': 'Base seed (trial 1 uses it; other trials derive distinct seeds).',
    'set_pytorch_max_split_size': 'Set PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:256.',
    'pytorch_eval_num_workers': 'DataLoader workers for eval loaders that have them.',
    'capture_jax_trace': 'JAX only; rejected.',
    'skip_evals': 'Train without evals (budget still checked every eval period).',
    'halt_on_divergence': 'End a trial whose eval metrics are non-finite (--nohalt_on_divergence trains on, as upstream).',
    'device': "'auto' (CUDA when available), 'cpu' or 'cuda'.",
    'progress': 'Progress bar (terminal) or periodic lines (logs) on stderr, with steps/s and ETA.',
    'quiet': ('No progress bar, no per-eval lines and no INFO logs: only the trial summary lines, the '
              'end-of-run table, warnings and errors.'),
    'num_threads': ('Torch intra-op CPU threads per rank, set before the workload and submission are built; '
                    '0 = auto: OMP_NUM_THREADS if set (not under torchrun), else the usable cores '
                    '(affinity) divided by the ranks on this node, at least 1. Recorded in meta_data_<n>.json.'),
}


def _run_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser('run', help='Run timed trials of a submission on a workload.',
                       description='Run timed trials (upstream submission_runner.py flags).')
    defaults = RunConfig.__dataclass_fields__
    for name, kind in RunConfig.field_types().items():
        default = defaults[name].default
        typ = {'bool': _parse_bool, 'int': int, 'str': str}[kind]
        p.add_argument(f'--{name}', type=typ, default=default, metavar=kind.upper(),
                       help=f'{_HELP.get(name, "")} (default: {default})')
    return p


def _list_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser('list', help='List registered workloads with targets and budgets.')
    p.add_argument('--json', action='store_true', help='Print JSON (one object per workload).')
    p.add_argument('--kind', choices=['base', 'variant', 'test', 'dev'], help='Only workloads of this kind.')
    p.add_argument('--benchmark_version', default=None,
                   help='Rules whose budgets and eval periods to show: 1.0 (default), 0.6 or 0.5.')
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='algoperf', description='Fast PyTorch AlgoPerf harness.')
    sub = parser.add_subparsers(dest='command', required=True)
    _run_parser(sub)
    _list_parser(sub)
    sub.add_parser('score', add_help=False, help='Score log trees (time-to-target, profiles, benchmark scores).')
    _profile_parser(sub)
    sub.add_parser('data', add_help=False, help="Prepare a workload's dataset (e.g. ogbg from the OGB release).")
    sub.add_parser('sweep', add_help=False,
                   help='Run a study grid (workloads x studies x trials) locally or as a SLURM job array.')
    sub.add_parser('bench', add_help=False,
                   help='Run benchmark suites; regenerate their sections of benchmarks/RESULTS.md.')
    return parser


def _profile_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser('profile', help="Where a workload's step time goes, phase by phase.",
                       description="Per-phase step-time breakdown of a submission on a workload (profiling mode "
                                   "synchronises at phase boundaries; timed trials never do).")
    p.add_argument('--workload', required=True, help='Registered workload name.')
    p.add_argument('--submission', '--submission_path', dest='submission', required=True,
                   help='Submission .py file.')
    p.add_argument('--data', default='synthetic', help="'synthetic' (no dataset needed) or a data directory.")
    p.add_argument('--steps', type=int, default=50, help='Measured steps (default 50).')
    p.add_argument('--warmup', type=int, default=5, help='Steps run first and left out (default 5).')
    p.add_argument('--trace', help='Also write a Chrome trace (torch.profiler) of the measured steps here.')
    p.add_argument('--output_dir', default='profile', help='Where profile.json and profile.png go.')
    p.add_argument('--batch_size', type=int, help="Global batch size (default: the submission's).")
    p.add_argument('--tuning_search_space', help='Use the first point of this search space (default: self-tuning).')
    p.add_argument('--rng_seed', type=int, default=0)
    p.add_argument('--no_eval', action='store_true', help='Skip timing one full eval.')
    p.add_argument('--eval_batches', type=int, default=8,
                   help='Time the eval on at most this many batches per split and extrapolate (default 8).')
    p.add_argument('--eval_batch_size', type=int,
                   help="Global eval batch size of the timed eval (default: the workload's, upstream's).")
    p.add_argument('--torch_compile', action='store_true', help="Compile where upstream does (off by default here).")
    p.add_argument('--device', choices=['cpu', 'cuda'], help='Default: cuda when available.')
    p.add_argument('--num_threads', type=int, default=0,
                   help='Torch intra-op threads (0 = auto, as `algoperf run`); recorded in profile.json.')
    return p


def _cmd_profile(args) -> int:
    from algoperf import profiling

    def print_steps(report):
        # Before the eval is timed: its failure (an OOM kill) must not lose the step phases.
        print(profiling.format_table(report))
        print(f'Wrote {args.output_dir}/profile.json and profile.png' + (f'; trace {args.trace}' if args.trace else ''),
              flush=True)

    report = profiling.profile_workload(
        args.workload, args.submission, data=args.data, steps=args.steps, warmup=args.warmup, trace=args.trace,
        output_dir=args.output_dir, global_batch_size=args.batch_size, tuning_search_space=args.tuning_search_space,
        rng_seed=args.rng_seed, run_eval=not args.no_eval, torch_compile=args.torch_compile, device=args.device,
        eval_batches=args.eval_batches, eval_batch_size=args.eval_batch_size, on_steps=print_steps,
        num_threads=args.num_threads)
    if report.get('eval_seconds') is not None:
        print(profiling.format_eval_line(report) + f' (added to {args.output_dir}/profile.json)')
    return 0


def _fmt_target(value) -> str:
    return 'none' if value is None else format(value, '.6g')


def _cmd_list(args) -> int:
    from algoperf import benchmark_versions, registry

    rules = benchmark_versions.get(args.benchmark_version)
    specs = [benchmark_versions.apply(registry.get_spec(n), rules.name) for n in registry.list_workloads(args.kind)]

    def scored(s) -> str:
        if s.name in rules.base_workloads:
            return 'yes'
        return 'held-out' if s.name in rules.held_out_workloads else 'no'

    if args.json:
        rows = [{**s.summary(), 'benchmark_version': rules.name, 'scored': scored(s),
                 'self_tuning_budget_sec': rules.self_tuning_budget_factor * s.max_allowed_runtime_sec}
                for s in specs]
        print(json.dumps(rows, indent=2))
        return 0
    print(f'Benchmark version {rules.name} ({rules.hardware}; {rules.num_base_workloads} scored base workloads'
          f'{", held-out variants gate their base" if rules.held_out_workloads else ""}'
          f'{", TF32 matmuls on CUDA" if rules.tf32 else ""}).')
    head = (f'{"workload":<45}{"kind":<8}{"scored":<9}{"target metric":<38}{"val target":>11}{"test target":>12}'
            f'{"budget s":>10}{"eval s":>8}{"step hint":>10}')
    print(head)
    for s in specs:
        arrow = '↑' if s.higher_is_better else '↓'
        print(f'{s.name:<45}{s.kind.value:<8}{scored(s):<9}{"validation/" + s.target_metric_name + " " + arrow:<38}'
              f'{s.validation_target_value:>11.6g}{_fmt_target(s.test_target_value):>12}{s.max_allowed_runtime_sec:>10,}'
              f'{s.eval_period_time_sec:>8,}{s.step_hint:>10,}')
    print(f'\nBudgets are external-tuning seconds; self-tuning gets {rules.self_tuning_budget_factor:g}x. '
          'Other versions: --benchmark_version=' + '|'.join(benchmark_versions.VERSIONS) + '.')
    return 0


def _setup_logging(progress, rank: int, quiet: bool = False) -> None:
    from algoperf.progress import ProgressLogHandler
    from algoperf.runtime import RankZeroFilter

    handler = ProgressLogHandler(progress)
    handler.setFormatter(logging.Formatter('%(asctime)s %(levelname).1s %(name)s] %(message)s', '%H:%M:%S'))
    handler.addFilter(RankZeroFilter(rank))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # --quiet: warnings and errors only (the full eval dicts are DEBUG records in any case).
    root.setLevel(logging.WARNING if quiet else logging.INFO)


def _cmd_run(args) -> int:
    fields = {k: getattr(args, k) for k in RunConfig.__dataclass_fields__}
    config = RunConfig(**fields)
    from algoperf import tracking

    tracking.check_available(config.use_tensorboard, config.use_wandb)  # One line, before anything is written.
    if config.set_pytorch_max_split_size:
        # Must happen before CUDA initialises.
        os.environ['PYTORCH_CUDA_ALLOC_CONF'] = 'max_split_size_mb:256'
    from algoperf.experiment import Experiment
    from algoperf.progress import Progress
    from algoperf.runtime import Runtime

    runtime = Runtime.from_env(device=None if config.device == 'auto' else config.device)
    if config.device == 'cuda':
        import torch

        if not torch.cuda.is_available():
            raise ConfigError('--device=cuda: no CUDA device is available.')
    progress = Progress(enabled=config.progress and not config.quiet and runtime.is_main, quiet=config.quiet)
    _setup_logging(progress, runtime.rank, quiet=config.quiet)
    runtime.init_process_group()
    try:
        experiment = Experiment(config, runtime, progress)
        results = experiment.run()
    finally:
        progress.close()
        runtime.shutdown()
    if runtime.is_main:
        print(f'Logs: {experiment.log_dir}')
    return experiment.exit_code(results)  # 0; 1 if a trial failed; 130/143 after SIGINT/SIGTERM


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith('--') and argv[0] not in ('--help', '-h'):
        argv = ['run'] + argv  # Upstream-style invocation without a subcommand.
    if argv and argv[0] == 'bench':
        # Runs pytest-benchmark suites from a checkout; parses its own flags.
        from algoperf.bench import main as bench_main

        return bench_main(argv[1:])
    if argv and argv[0] == 'data':
        # Each workload's own conversion tool, loaded by registered name.
        from algoperf.data_cli import main as data_main

        return data_main(argv[1:])
    if argv and argv[0] == 'score':
        # Scoring is its own package (numpy/pandas only); it parses its own flags.
        from scoring.cli import main as score_main

        return score_main(argv[1:])
    if argv and argv[0] == 'sweep':
        # Whole study grids (local or a SLURM array); its own flags, `--` passes run flags.
        from algoperf.sweep.cli import main as sweep_main

        return sweep_main(argv[1:])
    bool_flags = {k for k, v in RunConfig.field_types().items() if v == 'bool'}
    if argv and argv[0] == 'run':
        argv = ['run'] + _absl_to_argparse(argv[1:], bool_flags)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == 'list':
            return _cmd_list(args)
        if args.command == 'profile':
            return _cmd_profile(args)
        return _cmd_run(args)
    except BrokenPipeError:
        # `algoperf list | head`: the reader left; exit quietly like other CLI tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UserError as e:  # ConfigError, SubmissionError, DataError, CheckpointError, ...
        print(f'algoperf {args.command}: error: {" ".join(str(e).split())}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'algoperf {args.command}: interrupted (Ctrl-C).', file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001
        # Registry, submission, search-space and data errors are all user input.
        from algoperf.registry import UnknownWorkloadError, WorkloadNotAvailableError
        from algoperf.search_space import SearchSpaceError
        from algoperf.benchmark_versions import UnknownVersionError
        from algoperf.submission import SubmissionError

        user_errors = (UnknownWorkloadError, WorkloadNotAvailableError, SearchSpaceError, SubmissionError,
                       FileNotFoundError, NotADirectoryError, UnknownVersionError)
        if args.command == 'profile' and isinstance(e, (ValueError, NotImplementedError)):
            user_errors = user_errors + (ValueError, NotImplementedError)
        if isinstance(e, user_errors):
            print(f'algoperf {args.command}: error: {e}', file=sys.stderr)
            return 2
        raise


if __name__ == '__main__':
    sys.exit(main())
