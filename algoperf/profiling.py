"""`algoperf profile`: where a workload's step time goes, phase by phase.

The real runner loop (`runner._Trial`) runs `warmup + steps` steps with hooks that
open and close *phases*; each interval between two phase boundaries is charged to the
innermost open phase (exclusive time), so per step the phases add up to the wall time
of the step by construction:

    data_selection    the submission's data_selection (input pipeline wait), minus H2D
    h2d               host-to-device copies (CUDA only: Tensor.to/cuda/copy_ from CPU)
    forward           workload.model_fn and workload.loss_fn
    backward          torch.autograd.backward / grad (loss.backward())
    optimizer         torch.optim.Optimizer.step (global step hooks)
    submission_other  the rest of update_params (zero_grad, schedules, logging, ...)
    runner            everything else in the loop: RNG derivation, bookkeeping, the clock

Scope: phase boundaries call `torch.cuda.synchronize()` on CUDA so device work lands in
the phase that queued it; this happens only here, never in a timed trial. Steps are
bounded by data_selection calls; the first `warmup` steps (compile, allocator, caches)
are left out of the statistics. A per-step check compares the phase sum with the
runner's own accumulated submission time.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import json
import math
import os
import resource
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
import torch.optim.optimizer as optim_hooks

PHASES = ('data_selection', 'h2d', 'forward', 'backward', 'optimizer', 'submission_other', 'runner')


class PhaseTimer:
    """Exclusive time per phase, per step (stack of open phases)."""

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == 'cuda'
        self._stack: List[str] = []
        self._last: Optional[float] = None
        self._current: Dict[str, float] = collections.defaultdict(float)
        self.steps: List[Dict[str, float]] = []
        self.submission_time_marks: List[float] = []
        self.on_step = None  # called at each step boundary (torch.profiler's step())

    def _now(self) -> float:
        if self._cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _charge(self, t: float) -> None:
        if self._last is not None:
            self._current[self._stack[-1] if self._stack else 'runner'] += t - self._last
        self._last = t

    def step_boundary(self, submission_time: float) -> None:
        """Close the running step (if any) and start a new one."""
        t = self._now()
        self._charge(t)
        if self._current:
            self.steps.append(dict(self._current))
        self._current = collections.defaultdict(float)
        self.submission_time_marks.append(submission_time)
        if self.on_step is not None:
            self.on_step()
            # torch.profiler may export the trace here (seconds): not part of any step.
            self._last = self._now()

    def finish(self) -> None:
        self._charge(self._now())
        if self._current:
            self.steps.append(dict(self._current))
        self._current = collections.defaultdict(float)

    @contextlib.contextmanager
    def phase(self, name: str):
        self._charge(self._now())
        self._stack.append(name)
        try:
            with torch.profiler.record_function(f'phase:{name}'):
                yield
        finally:
            self._charge(self._now())
            self._stack.pop()


def _wrap(fn, timer: PhaseTimer, name: str):
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with timer.phase(name):
            return fn(*args, **kwargs)

    return wrapped


class _H2DMode(torch.overrides.TorchFunctionMode):
    """Charges CPU -> accelerator copies to the 'h2d' phase (installed on CUDA only)."""

    def __init__(self, timer: PhaseTimer) -> None:
        super().__init__()
        self.timer = timer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self._is_h2d(func, args, kwargs):
            with self.timer.phase('h2d'):
                return func(*args, **kwargs)
        return func(*args, **kwargs)

    @staticmethod
    def _is_h2d(func, args, kwargs) -> bool:
        if not args or not isinstance(args[0], torch.Tensor):
            return False
        if func is torch.Tensor.cuda:
            return args[0].device.type == 'cpu'
        if func is torch.Tensor.to:
            device = torch._C._nn._parse_to(*args[1:], **kwargs)[0]
            return args[0].device.type == 'cpu' and device is not None and device.type != 'cpu'
        if func is torch.Tensor.copy_ and len(args) > 1 and isinstance(args[1], torch.Tensor):
            return args[1].device.type == 'cpu' and args[0].device.type != 'cpu'
        return False


@contextlib.contextmanager
def instrument(workload, submission, timer: PhaseTimer, trial):
    """Install the phase hooks for the duration of the block; restore everything after."""
    originals = {'model_fn': workload.model_fn, 'loss_fn': workload.loss_fn}
    workload.model_fn = _wrap(workload.model_fn, timer, 'forward')
    workload.loss_fn = _wrap(workload.loss_fn, timer, 'forward')

    def data_selection(*args, **kwargs):
        timer.step_boundary(float(trial.train_state['accumulated_submission_time']))
        with timer.phase('data_selection'):
            return submission.data_selection(*args, **kwargs)

    wrapped_sub = dataclasses.replace(
        submission, data_selection=data_selection,
        update_params=_wrap(submission.update_params, timer, 'submission_other'))
    # functools.wraps keeps update_params' signature visible: the runner checks it for `train_state`.
    trial.sub = wrapped_sub
    autograd_backward, autograd_grad = torch.autograd.backward, torch.autograd.grad
    torch.autograd.backward = _wrap(autograd_backward, timer, 'backward')
    torch.autograd.grad = _wrap(autograd_grad, timer, 'backward')
    open_steps = []

    def pre_hook(optimizer, args, kwargs):
        cm = timer.phase('optimizer')
        cm.__enter__()
        open_steps.append(cm)

    def post_hook(optimizer, args, kwargs):
        open_steps.pop().__exit__(None, None, None)

    handles = [optim_hooks.register_optimizer_step_pre_hook(pre_hook),
               optim_hooks.register_optimizer_step_post_hook(post_hook)]
    mode = _H2DMode(timer) if trial.s.runtime.device.type == 'cuda' else contextlib.nullcontext()
    try:
        with mode:
            yield
    finally:
        for h in handles:
            h.remove()
        torch.autograd.backward, torch.autograd.grad = autograd_backward, autograd_grad
        workload.model_fn, workload.loss_fn = originals['model_fn'], originals['loss_fn']
        trial.sub = submission


def _stats(values: np.ndarray) -> Dict[str, float]:
    return {'mean': float(values.mean()), 'p50': float(np.percentile(values, 50)),
            'p90': float(np.percentile(values, 90))}


def summarize(timer: PhaseTimer, warmup: int, global_batch_size: int) -> Dict[str, Any]:
    """Per-phase and per-step statistics over the steps after warm-up (seconds)."""
    steps = timer.steps[warmup:]
    if not steps:
        raise ValueError('no measured steps (increase --steps)')
    table = np.array([[s.get(p, 0.0) for p in PHASES] for s in steps])
    totals = table.sum(axis=1)
    marks = timer.submission_time_marks
    # The runner's own clock over the same steps: marks[k] is its accumulated submission
    # time at step k's boundary (steps 0..k-1 done), so marks[w + n - 1] - marks[w] covers
    # the first n - 1 measured steps (the last one is closed by finish(), with no mark).
    n = len(steps)
    runner_measured = marks[warmup + n - 1] - marks[warmup] if n >= 2 else None
    phases = {p: dict(_stats(table[:, i]), share=float(table[:, i].sum() / totals.sum())) for i, p in enumerate(PHASES)}
    step = _stats(totals)
    return {
        'phases': phases,
        'step': step,
        'measured_steps': len(steps),
        'examples_per_second': global_batch_size / step['mean'],
        'runner_clock_seconds': runner_measured,
        'phase_sum_seconds': float(totals[: n - 1].sum()) if runner_measured is not None else None,
        'per_step': {p: table[:, i].tolist() for i, p in enumerate(PHASES)},
    }


def peak_memory(device: torch.device) -> Dict[str, float]:
    if device.type == 'cuda':
        return {'peak_device_memory_mib': torch.cuda.max_memory_allocated(device) / 2**20}
    # ru_maxrss is KiB on Linux: the process's peak resident set (host memory).
    return {'peak_host_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def format_table(report: Dict[str, Any]) -> str:
    lines = [f'{"phase":<18}{"mean ms":>10}{"p50 ms":>10}{"p90 ms":>10}{"share":>8}']
    for p in PHASES:
        s = report['phases'][p]
        lines.append(f'{p:<18}{1e3 * s["mean"]:>10.3f}{1e3 * s["p50"]:>10.3f}{1e3 * s["p90"]:>10.3f}{s["share"]:>8.1%}')
    st = report['step']
    lines.append(f'{"step (sum)":<18}{1e3 * st["mean"]:>10.3f}{1e3 * st["p50"]:>10.3f}{1e3 * st["p90"]:>10.3f}{1:>8.0%}')
    lines.append(f'{report["measured_steps"]} steps after {report["warmup_steps"]} warm-up; '
                 f'{_rate(report["examples_per_second"])} examples/s at global batch {report["global_batch_size"]}; '
                 + ', '.join(f'{k} {v:,.1f}' for k, v in report['memory'].items()))
    if report.get('torch_num_threads') is not None:
        lines.append(format_host_line(report))
    if report.get('eval_seconds') is not None:
        lines.append(format_eval_line(report))
    return '\n'.join(lines)


def format_host_line(report: Dict[str, Any]) -> str:
    """Threads, CPU and the 1-minute load around the measured steps (what the timings ran under)."""
    def load(key):
        value = report.get(key)
        return f'{value[0]:.2f}' if value else '?'

    return (f'{report["torch_num_threads"]} torch thread(s) ({report.get("torch_num_threads_source")}) on '
            f'{report.get("cpu_model_name") or "?"}, {report.get("cpu_count_logical")} logical core(s); '
            f'1-minute load average {load("load_average_start")} before the steps, {load("load_average_end")} after')


def format_eval_line(report: Dict[str, Any]) -> str:
    """The timed eval's line of the table ('' when no eval was timed)."""
    if report.get('eval_seconds') is None:
        return ''
    extrapolated = report.get('eval_batches_measured', 0) < report.get('eval_batches_full', 0)
    how = (f' (extrapolated from {report["eval_batches_measured"]} of {report["eval_batches_full"]} batches)'
           if extrapolated else '')
    return (f'one full eval at eval batch {report["eval_batch_size"]} (off the clock in a trial): '
            f'{report["eval_seconds"]:.3f} s{how}')


def plot(report: Dict[str, Any], path_png: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    means = [1e3 * report['phases'][p]['mean'] for p in PHASES]
    p90 = [1e3 * report['phases'][p]['p90'] for p in PHASES]
    y = np.arange(len(PHASES))
    ax.barh(y, means, color='C0', label='mean')
    ax.scatter(p90, y, color='C3', marker='|', s=120, label='p90', zorder=3)
    for yi, m, p in zip(y, means, PHASES):
        ax.text(m, yi, f' {report["phases"][p]["share"]:.0%}', va='center', fontsize=8)
    ax.set_yticks(y, PHASES)
    ax.invert_yaxis()
    ax.set_xlabel('ms per step')
    ax.set_title(f'{report["workload"]}: {1e3 * report["step"]["mean"]:.2f} ms/step '
                 f'({_rate(report["examples_per_second"])} examples/s)')
    ax.legend(fontsize=8, frameon=False, loc='lower right')
    fig.tight_layout()
    fig.savefig(path_png)


def _time_eval(workload, trial, runtime, data_dir, rng, eval_batches: int, eval_batch_size: int) -> Dict[str, Any]:
    """Times one eval on at most `eval_batches` batches per split and extrapolates to the full eval.

    A full eval can be hours (Criteo: 83M eval_train + 83M validation + 95M test examples,
    ~32,000 batches of 8,192); a profile wants its cost per batch. The split sizes are capped
    by swapping in a copy of the workload's spec for the duration of the call.
    """
    spec = workload.workload_spec
    cap = eval_batches * eval_batch_size
    counts = {k: getattr(spec, k) for k in ('num_eval_train_examples', 'num_validation_examples', 'num_test_examples')}
    capped = {k: (min(v, cap) if v else v) for k, v in counts.items()}
    full = sum(math.ceil(v / eval_batch_size) for v in counts.values() if v)
    ran = sum(math.ceil(v / eval_batch_size) for v in capped.values() if v)
    from algoperf.timing import Clock

    workload._eval_iters = {}
    workload.workload_spec = dataclasses.replace(spec, **capped)
    try:
        clock = Clock(runtime)
        t0 = clock.now()
        workload.eval_model(eval_batch_size, trial.params, trial.model_state, rng, data_dir, None,
                            trial.global_step)
        measured = clock.now() - t0
    finally:
        del workload.workload_spec  # the class attribute shows through again
        workload._eval_iters = {}
    return {'eval_seconds': measured * full / max(ran, 1), 'eval_seconds_measured': measured,
            'eval_batches_measured': ran, 'eval_batches_full': full}


def _rate(per_second: float) -> str:
    """Throughput with 2 significant digits below 100 (a 5 s step at batch 2 is 0.38/s, not 0)."""
    return f'{per_second:,.0f}' if per_second >= 100 else f'{per_second:.2g}'


def _warn_if_busy(what: str, load, runtime) -> bool:
    from algoperf.runtime import busy_machine_warning  # noqa: PLC0415

    line = busy_machine_warning(what, load)
    if line is not None and runtime.is_main:
        print(f'algoperf profile: warning: {line}', file=sys.stderr, flush=True)
    return line is not None


def write_json(report: Dict[str, Any], path: str) -> None:
    with open(path, 'w') as f:
        json.dump(report, f, indent=2, default=str)  # str: e.g. torch.device values


def profile_workload(workload_name: str, submission_path: str, data: str = 'synthetic', steps: int = 20,
                     warmup: int = 5, trace: Optional[str] = None, output_dir: Optional[str] = None,
                     global_batch_size: Optional[int] = None, tuning_search_space: Optional[str] = None,
                     rng_seed: int = 0, run_eval: bool = True, torch_compile: bool = False,
                     device: Optional[str] = None, eval_batches: int = 8,
                     eval_batch_size: Optional[int] = None,
                     on_steps: Optional[Callable[[Dict[str, Any]], None]] = None,
                     num_threads: int = 0) -> Dict[str, Any]:
    """Profile `steps` steps (after `warmup`) of a submission on a workload; returns the report.

    Hyperparameters: the first point of `tuning_search_space`, else None (self-tuning).
    The eval is timed on at most `eval_batches` eval batches per split of `eval_batch_size`
    examples (default: the workload's) and extrapolated (`eval_seconds`);
    `eval_seconds_measured` is what ran.

    The step phases are reported before the eval runs, so an eval that fails (or is killed)
    does not lose them: `profile.json` and `profile.png` are written to `output_dir` and
    `on_steps(report)` is called (the CLI prints the table there); after the eval,
    profile.json is written again with the eval's fields (or `eval_error`, then the
    error is re-raised).

    Timing hygiene, as `algoperf run`: torch's intra-op threads are set first
    (`num_threads`, 0 = auto: runtime.choose_num_threads) and the report records them
    with the CPU and the load average before and after the measured steps
    (`load_average_start`, `load_average_end`; 1, 5, 15 minutes); a 1-minute load above
    the logical cores at either point is one warning line on stderr.
    """
    from algoperf import random_utils as prng
    from algoperf import registry, search_space
    from algoperf import submission as submission_lib
    from algoperf.config import RunConfig
    from algoperf.profiler import PassThroughProfiler
    from algoperf.progress import Progress
    from algoperf.runner import TrialSetup, _Trial
    from algoperf import runtime as runtime_lib
    from algoperf.runtime import Runtime
    from algoperf.timing import Clock

    if steps < 2 or warmup < 0:
        raise ValueError('--steps must be >= 2 and --warmup >= 0')
    if eval_batches < 1:
        raise ValueError(f'--eval_batches={eval_batches}: must be >= 1')
    if eval_batch_size is not None and eval_batch_size < 1:
        raise ValueError(f'--eval_batch_size={eval_batch_size}: must be >= 1')
    if num_threads < 0:
        raise ValueError(f'--num_threads={num_threads}: must be >= 0 (0 = auto)')
    runtime = Runtime.from_env(device=device)
    # Before the submission and workload are built, as in `algoperf run`.
    threads, threads_source = runtime_lib.choose_num_threads(num_threads, runtime)
    host = {'torch_num_threads': runtime_lib.set_num_threads(threads), 'torch_num_threads_source': threads_source,
            **runtime_lib.cpu_facts()}
    runtime.init_process_group()
    spec = registry.get_spec(workload_name)
    sub = submission_lib.load(submission_path)
    hp = search_space.load(tuning_search_space).generate(1, seed=rng_seed)[0] if tuning_search_space else None
    workload = registry.get_workload(workload_name, runtime=runtime)
    data_dir = '~/data'
    if data == 'synthetic':
        synthetic = workload._build_synthetic_input_queue
        workload._build_input_queue = lambda data_rng, split, data_dir, global_batch_size, **kw: synthetic(
            data_rng, split, global_batch_size)
    else:
        data_dir = os.path.expanduser(data)
        getattr(workload, 'validate_data_dir', lambda d: None)(data_dir)
    batch = global_batch_size or sub.batch_size(workload_name, spec.base_workload)
    eval_batch = eval_batch_size or workload.eval_batch_size
    if eval_batch % runtime.world_size:
        raise ValueError(f'--eval_batch_size={eval_batch}: must be a multiple of the {runtime.world_size} ranks')
    config = RunConfig(submission_path=submission_path, workload=workload_name, experiment_dir='(profile)',
                       tuning_ruleset='self', data_dir=data_dir, max_global_steps=warmup + steps, skip_evals=True,
                       save_checkpoints=False, progress=False, torch_compile=torch_compile)
    setup = TrialSetup(config=config, runtime=runtime, clock=Clock(runtime), global_batch_size=batch,
                       global_eval_batch_size=eval_batch, trial_dir=None,
                       profiler=PassThroughProfiler(), progress=Progress(enabled=False),
                       compile_model=spec.compile_model, compile_loss=spec.compile_loss)
    trial = _Trial(workload, sub, hp, prng.split(prng.PRNGKey(rng_seed), 2)[0], setup)
    trial.setup()
    trial.budget = math.inf  # A profile runs its step count whatever the workload's budget.
    timer = PhaseTimer(runtime.device)
    if runtime.device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(runtime.device)
    tracer = contextlib.nullcontext()
    if trace:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if runtime.device.type == 'cuda':
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        tracer = torch.profiler.profile(activities=activities,
                                        schedule=torch.profiler.schedule(wait=0, warmup=warmup, active=steps, repeat=1),
                                        on_trace_ready=lambda p: p.export_chrome_trace(trace))
    host['load_average_start'] = runtime_lib.load_average()
    busy = _warn_if_busy('profile start', host['load_average_start'], runtime)
    with tracer as prof:
        if trace:
            timer.on_step = prof.step
        with instrument(workload, sub, timer, trial):
            trial.run()
        timer.finish()
    host['load_average_end'] = runtime_lib.load_average()
    if not busy:
        _warn_if_busy('profile end', host['load_average_end'], runtime)
    report = summarize(timer, warmup, batch)
    report.update(host)
    report.update(workload=workload_name, submission=submission_path, data=data, device=str(runtime.device),
                  world_size=runtime.world_size, global_batch_size=batch, warmup_steps=warmup,
                  torch_version=torch.__version__, memory=peak_memory(runtime.device), trace=trace,
                  eval_batch_size=eval_batch)
    report['eval_seconds'] = None
    write = bool(output_dir) and runtime.is_main
    json_path = os.path.join(output_dir, 'profile.json') if write else None
    # The step phases first: an eval that fails or is killed (an OOM) must not lose them.
    if write:
        os.makedirs(output_dir, exist_ok=True)
        write_json(report, json_path)
        plot(report, os.path.join(output_dir, 'profile.png'))
    if on_steps is not None and runtime.is_main:
        on_steps(report)
    if run_eval:
        try:
            report.update(_time_eval(workload, trial, runtime, data_dir, prng.PRNGKey(rng_seed), eval_batches,
                                     eval_batch))
        except BaseException as e:
            if write:
                report['eval_error'] = f'{type(e).__name__}: {e}'
                write_json(report, json_path)
            raise
        if write:
            report['memory_with_eval'] = peak_memory(runtime.device)
            write_json(report, json_path)
    runtime.shutdown()
    return report
