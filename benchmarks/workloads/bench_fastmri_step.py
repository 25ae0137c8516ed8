"""One fastMRI U-Net training step (forward, masked L1, backward, NAdamW), fast vs plain norms.

Run (from the repository root, on a quiet machine; ~3 GB of memory)::

    python -m pytest benchmarks/workloads/bench_fastmri_step.py \
        --benchmark-json=benchmarks/results/fastmri_step_<hw>_<yyyymmdd>.json

Smoke run (2 timed rounds)::

    ALGOPERF_BENCH_QUICK=1 python -m pytest benchmarks/workloads/bench_fastmri_step.py

The base model (7,756,097 parameters: 32 channels, 4 pooling levels, LeakyReLU(0.2),
InstanceNorm2d) on a synthetic batch of 8 slices, [8, 1, 320, 320] inputs and [8, 320, 320]
targets (the workload's layout), dropout 0. One round = ``zero_grad()``, forward, the
workload's loss (``FastMRIWorkload.loss_fn``: per-example mean absolute error, summed,
divided by ``n_valid_examples``), backward, one NAdamW step over all parameters
(``submissions.optimizers.nadamw.NAdamW``, the baseline's optimizer). On CPU the 3x3
convolutions (~22 GFLOP forward per slice) are ~80% of the step; the switch only touches
the norms and their in-place activations.

Providers (same seed, same initial weights, same batch):
    fast: ``UNet(fast_instance_norm=True)``, as the workload builds it: every InstanceNorm2d
        runs as ``F.group_norm(x, C)`` on CPU tensors (no view, so no CopySlices copy of
        the gradient behind the in-place LeakyReLU; see workloads/fastmri/models.py).
    plain (peer): ``UNet()``, upstream's ``F.instance_norm`` path.
Per-item column: time per slice.
"""

import pytest
import torch
from _harness import rounds

from algoperf import registry
from algoperf.runtime import Runtime
from submissions.optimizers.nadamw import NAdamW
from workloads.fastmri import models

BATCH, SIZE = 8, 320
# ~0.5 TFLOP per step with backward: ~10 s on 2 CPU cores (batch 2 took ~4.5 CPU-s on one
# thread), so 5 rounds + warm-up keep each provider near a minute.
ROUNDS = 5


def _batch():
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(BATCH, SIZE, SIZE, generator=g).clamp(-6, 6)
    targets = torch.randn(BATCH, SIZE, SIZE, generator=g).clamp(-6, 6)
    return inputs, targets


@pytest.mark.parametrize('provider', ['fast', 'plain'])
def test_fastmri_train_step(benchmark, provider):
    workload = registry.get_workload('fastmri', runtime=Runtime(torch.device('cpu')))
    torch.manual_seed(0)
    model = models.UNet(fast_instance_norm=provider == 'fast')
    model.train()
    opt = NAdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=1e-2)
    inputs, targets = _batch()

    def step():
        opt.zero_grad()
        outputs = model(inputs.unsqueeze(1), dropout_rate=0.0).squeeze(1)
        loss = workload.loss_fn(targets, outputs)
        (loss['summed'] / loss['n_valid_examples']).backward()
        opt.step()

    benchmark.group = f'fastmri_step_b{BATCH}'
    benchmark.extra_info.update(
        device='cpu',
        peer='plain',
        items=BATCH,
        item_unit='slice',
        torch_num_threads=torch.get_num_threads(),
    )
    benchmark.pedantic(step, rounds=rounds(ROUNDS), warmup_rounds=1, iterations=1)
