"""The step loop is sync-free: one clock time point per step and no other host sync.

Drives the real ``train_once`` with a no-op submission (``benchmarks/runner/noop_trial.py``)
and counts, from the first ``data_selection`` call on (so setup is excluded), every call
that makes the host wait for the device: ``Tensor.item/tolist/cpu/numpy``, ``.to`` a CPU
device, the implicit ``__bool__/__float__/__int__`` conversions, and
``torch.cuda.synchronize``. On CPU none of these actually waits, which is the point: the
count catches a sync-in-waiting on a CPU-only machine before it costs a GPU run. The GPU
variant also runs the loop under ``torch.cuda.set_sync_debug_mode('error')``.
"""

import contextlib
import dataclasses

import pytest
import torch
from torch.overrides import TorchFunctionMode

from algoperf import random_utils as prng
from algoperf.runner import train_once
from algoperf.runtime import Runtime
from algoperf.timing import Clock
from benchmarks.runner import noop_trial

# Tensor methods that copy a value to the host (a sync on CUDA).
SYNC_METHODS = frozenset({'item', 'tolist', 'cpu', 'numpy', '__bool__', '__float__', '__int__'})
# Clock time points besides one per step: the start, and the one after each of the two
# eval points (after step 1, always; and at the final step) that restarts the step timer.
CLOCK_CALLS_BESIDES_STEPS = 3


def _to_cpu(args, kwargs) -> bool:
    targets = list(args[1:]) + [kwargs.get('device')]
    return any(str(t) == 'cpu' for t in targets if isinstance(t, (str, torch.device)))


class SyncCounter(TorchFunctionMode):
    """Records host-sync tensor methods (and, via ``counting_synchronize``, device syncs)
    while ``active``."""

    def __init__(self):
        super().__init__()
        self.active = False
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, '__name__', None)
        if self.active and (name in SYNC_METHODS or (name == 'to' and _to_cpu(args, kwargs))):
            self.calls.append(name)
        return func(*args, **kwargs)

    @contextlib.contextmanager
    def paused(self):
        active, self.active = self.active, False
        try:
            yield
        finally:
            self.active = active


class CountingClock(Clock):
    """Counts its time points; the sync inside one is the runner's deliberate sync, so the
    sync counter is paused there (and, on CUDA, the sync debug mode)."""

    def __init__(self, runtime, counter):
        super().__init__(runtime)
        self.counter = counter
        self.calls = 0

    def now(self):
        self.calls += 1
        cuda = self._cuda
        mode = torch.cuda.get_sync_debug_mode() if cuda else 0
        with self.counter.paused():
            if cuda:
                torch.cuda.set_sync_debug_mode(0)
            try:
                return super().now()
            finally:
                if cuda:
                    torch.cuda.set_sync_debug_mode(mode)


def _run(steps, monkeypatch, device='cpu', submission=None, sync_debug=False):
    """``train_once`` for ``steps`` steps; returns (clock calls, syncs seen in the loop)."""
    runtime = Runtime.from_env(env={}, device=device)
    counter = SyncCounter()
    clock = CountingClock(runtime, counter)
    sub = submission or noop_trial.submission()
    select = sub.data_selection

    def data_selection(*args, **kwargs):
        if not counter.active:  # Setup is over: the first step begins.
            counter.active = True
            if sync_debug:
                torch.cuda.set_sync_debug_mode('error')
        return select(*args, **kwargs)

    real_synchronize = torch.cuda.synchronize

    def counting_synchronize(*args, **kwargs):
        if counter.active:
            counter.calls.append('torch.cuda.synchronize')
        return real_synchronize(*args, **kwargs)

    monkeypatch.setattr(torch.cuda, 'synchronize', counting_synchronize)
    sub = dataclasses.replace(sub, data_selection=data_selection)
    try:
        with counter:
            outcome = train_once(
                noop_trial.NoOpWorkload(runtime),
                sub,
                None,
                prng.PRNGKey(0),
                noop_trial.trial_setup(steps, runtime, clock=clock),
            )
    finally:
        if sync_debug:
            torch.cuda.set_sync_debug_mode(0)
    assert outcome.global_step == steps
    return clock.calls, counter.calls


@pytest.mark.parametrize('steps', [5, 50])
def test_one_clock_time_point_per_step(steps, monkeypatch):
    clock_calls, _ = _run(steps, monkeypatch)
    assert clock_calls == steps + CLOCK_CALLS_BESIDES_STEPS


def test_no_host_sync_in_step_loop(monkeypatch):
    _, syncs = _run(50, monkeypatch)
    assert syncs == []


def _syncing_submission(sync):
    base = noop_trial.submission()

    def update_params(**kwargs):
        sync(kwargs['batch']['inputs'])
        return base.update_params(**kwargs)

    return dataclasses.replace(base, update_params=update_params)


@pytest.mark.parametrize(
    'sync, name',
    [
        (lambda x: x.sum().item(), 'item'),
        (lambda x: bool(x.any()), '__bool__'),
        (lambda x: x.to('cpu'), 'to'),
        (lambda x: torch.cuda.synchronize(), 'torch.cuda.synchronize'),
    ],
)
def test_counter_catches_a_sync_in_the_loop(sync, name, monkeypatch):
    """Positive control: a sync in every step is seen in every step, and only there."""
    if name == 'torch.cuda.synchronize' and not torch.cuda.is_available():
        # Without CUDA the real call raises; count it through a stand-in instead.
        monkeypatch.setattr(torch.cuda, 'synchronize', lambda *a, **k: None)
    _, syncs = _run(7, monkeypatch, submission=_syncing_submission(sync))
    assert syncs == [name] * 7


@pytest.mark.gpu
def test_no_host_sync_in_step_loop_cuda(monkeypatch):
    """On CUDA, with real asynchronous work each step: no counted sync, and none of the
    implicit ones ``set_sync_debug_mode('error')`` turns into errors."""

    def device_work(inputs):
        inputs.add_(1.0)  # Queued on the device; a sync would have to wait for it.

    clock_calls, syncs = _run(
        20, monkeypatch, device='cuda', submission=_syncing_submission(device_work), sync_debug=True
    )
    assert clock_calls == 20 + CLOCK_CALLS_BESIDES_STEPS
    assert syncs == []
