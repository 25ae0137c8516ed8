"""One DLRM-small training step (forward, backward, NAdamW) at Criteo's full table size.

Run (from the repository root, on a quiet machine; ~11 GB of memory)::

    python -m pytest benchmarks/workloads/bench_criteo_step.py \
        --benchmark-json=benchmarks/results/criteo_step_<hw>_<yyyymmdd>.json

The base model (539,267,457 parameters; 4,194,304 x 128 table in four chunks) on a
synthetic per-device batch of 8,192 examples (13 dense features, 26 ids uniform over the
table, 3% positives), dropout 0. One round = ``zero_grad()``, forward, the summed sigmoid
cross-entropy divided by the batch, backward, one fused NAdamW step over all parameters
(``submissions.optimizers.nadamw.NAdamW``, the baseline's optimizer; its update moves 28 B
per parameter, ~15 GB, the floor of this step on CPU).

Providers:
    chunked: the model as the workload builds it (``kernels.chunked_embedding``).
    concat (peer): the same model with upstream's ``torch.cat(chunks)[ids]`` lookup.
"""

import pytest
import torch
from _harness import rounds

from submissions.optimizers.nadamw import NAdamW
from workloads.criteo1tb.models import DlrmSmall, _concat_lookup

VOCAB, BATCH = 4_194_304, 8_192
ROUNDS = 3


def _batch():
    g = torch.Generator().manual_seed(0)
    dense = torch.log1p(torch.rand(BATCH, 13, generator=g) * 100)
    ids = torch.randint(0, VOCAB, (BATCH, 26), generator=g).float()
    return torch.cat([dense, ids], dim=1), (torch.rand(BATCH, generator=g) < 0.03).float()


@pytest.mark.parametrize('provider', ['chunked', 'concat'])
def test_criteo_train_step(benchmark, provider):
    torch.manual_seed(0)
    model = DlrmSmall(VOCAB, embedding_lookup=_concat_lookup if provider == 'concat' else None)
    opt = NAdamW(model.parameters(), lr=1e-3, betas=(0.93, 0.9955), weight_decay=0.08)
    inputs, targets = _batch()

    def step():
        opt.zero_grad()
        logits = model(inputs, 0.0).reshape(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
        loss.backward()
        opt.step()

    benchmark.group = 'criteo_step_b8192'
    benchmark.extra_info.update(device='cpu', peer='concat', items=BATCH, item_unit='example')
    benchmark.pedantic(step, rounds=rounds(ROUNDS), warmup_rounds=1, iterations=1)
