"""Runner overhead per training step: ``algoperf.runner.train_once`` with a no-op submission.

With a workload that computes nothing and a submission whose ``update_params`` returns its
inputs, every microsecond of a step is harness: per-step key derivation (upstream's
numpy-RandomState ``prng.fold_in`` + ``prng.split``), the clock's time point, bookkeeping,
progress. The smallest real AlgoPerf step is ~130 ms (fastMRI, SF-AdamW, 8x V100;
``../shared/reference/perf_anchors.md``), so the target is < 1% of it: < 1.3 ms per step.

Run (from the repository root, on a quiet machine)::

    python -m algoperf bench --suite runner_overhead

Providers (one group; each round is one trial of ``STEPS`` steps):
    train_once: the real runner (``skip_evals``, no checkpoints, no logs, no progress),
        setup included (~2 ms, i.e. ~1 us per step at 2000 steps).
    bare_loop: the peer, the unavoidable cost: ``data_selection`` + ``update_params`` +
        one ``time.time()`` per step, nothing else.

extra_info: ``items``/``item_unit`` (the report's per-step column), ``us_per_step`` and
``report['% of 130 ms step']`` (train_once only).
"""

import time

import pytest
from _harness import rounds
from noop_trial import BATCH_SIZE, NoOpWorkload, submission, trial_setup

from algoperf import random_utils as prng
from algoperf.runner import train_once
from algoperf.runtime import Runtime

STEPS = 2000
# ~40-75 us per step on the 2-vCPU VM: a round is ~0.1-0.15 s, 20 rounds ~3 s.
ROUNDS = 20
WARMUP_ROUNDS = 2
SMALLEST_ALGOPERF_STEP_SEC = 0.130  # fastMRI, SF-AdamW, 8x V100 (perf_anchors.md).


def _train_once(runtime):
    sub = submission()
    outcome = train_once(
        NoOpWorkload(runtime), sub, None, prng.PRNGKey(0), trial_setup(STEPS, runtime)
    )
    assert outcome.global_step == STEPS


def _bare_loop(runtime):
    sub, workload = submission(), NoOpWorkload(runtime)
    queue = workload._build_input_queue(None, 'train', '', BATCH_SIZE)
    params, model_state = workload.init_model_fn(None)
    opt_state = None
    for step in range(STEPS):
        batch = sub.data_selection(
            workload, queue, opt_state, params, model_state, None, step, None
        )
        opt_state, params, model_state = sub.update_params(
            workload=workload,
            current_param_container=params,
            current_params_types=None,
            model_state=model_state,
            hyperparameters=None,
            batch=batch,
            loss_type=None,
            optimizer_state=opt_state,
            eval_results=[],
            global_step=step,
            rng=None,
        )
        time.time()


PROVIDERS = {'train_once': _train_once, 'bare_loop': _bare_loop}


@pytest.mark.parametrize('provider', list(PROVIDERS))
def test_runner_overhead(benchmark, provider):
    runtime = Runtime.from_env(env={}, device='cpu')
    benchmark.group = f'no-op steps ({STEPS} per round)'
    benchmark.extra_info.update(device='cpu', items=STEPS, item_unit='step', peer='bare_loop')
    benchmark.pedantic(
        PROVIDERS[provider],
        args=(runtime,),
        rounds=rounds(ROUNDS),
        warmup_rounds=WARMUP_ROUNDS,
        iterations=1,
    )
    stats = getattr(benchmark, 'stats', None)
    if stats is not None and stats.stats.data:
        per_step = stats.stats.median / STEPS
        benchmark.extra_info['us_per_step'] = per_step * 1e6
        if provider == 'train_once':
            pct = 100 * per_step / SMALLEST_ALGOPERF_STEP_SEC
            benchmark.extra_info['report'] = {'% of 130 ms step': f'{pct:.3f}%'}
