"""Criteo's embedding lookup, forward + backward: chunked_embedding vs its peers.

Run (from the repository root, on a quiet machine; ~9 GB of memory)::

    python -m pytest benchmarks/kernels/bench_chunked_embedding.py \
        --benchmark-json=benchmarks/results/chunked_embedding_<hw>_<yyyymmdd>.json

Shapes: DLRM-small's table, 4,194,304 x 128 fp32 (2.15 GB) as four 1,048,576-row chunks,
26 lookups per example, per-device batches of 8,192 and 32,768 (upstream's global batch
262,144 over 8 GPUs). One round = what a training step does with the table: set the grads
to None (``zero_grad()``), look up, multiply by a fixed upstream gradient, backward.

Providers (one group per batch size):
    chunked: ``kernels.chunked_embedding`` (C++ on CPU; gradient buffers reused).
    chunked_fresh_grads: the same with ``reuse_grad_buffers=False``.
    nn_embedding (peer): one ``torch.nn.Embedding`` table (dense gradient).
    concat: upstream's ``torch.cat(chunks)[ids]``.
"""

import pytest
import torch
from _harness import rounds

from kernels.chunked_embedding import chunked_embedding, chunked_embedding_reference

ROWS, DIM, CHUNKS, LOOKUPS = 4_194_304, 128, 4, 26
BATCHES = (8_192, 32_768)
ROUNDS = 5
PROVIDERS = ('chunked', 'chunked_fresh_grads', 'nn_embedding', 'concat')


@pytest.fixture(scope='module')
def table():
    g = torch.Generator().manual_seed(0)
    chunks = [
        (torch.rand(ROWS // CHUNKS, DIM, generator=g) / 2048).requires_grad_()
        for _ in range(CHUNKS)
    ]
    return chunks


def _step(provider, chunks, idx, w):
    if provider == 'nn_embedding':
        emb = torch.nn.Embedding(ROWS, DIM, _weight=torch.cat([c.detach() for c in chunks]))

        def run():
            emb.weight.grad = None
            (emb(idx) * w).sum().backward()

        return run

    def run():
        for c in chunks:
            c.grad = None
        if provider == 'concat':
            out = chunked_embedding_reference(idx, chunks)
        else:
            out = chunked_embedding(idx, chunks, reuse_grad_buffers=provider == 'chunked')
        (out * w).sum().backward()

    return run


@pytest.mark.parametrize('provider', PROVIDERS)
@pytest.mark.parametrize('batch', BATCHES)
def test_chunked_embedding(benchmark, table, batch, provider):
    g = torch.Generator().manual_seed(batch)
    idx = torch.randint(0, ROWS, (batch, LOOKUPS), generator=g)
    w = torch.randn(batch, LOOKUPS, DIM, generator=g)
    run = _step(provider, table, idx, w)
    benchmark.group = f'embedding_b{batch}'
    benchmark.extra_info.update(device='cpu', peer='nn_embedding', items=batch, item_unit='example')
    benchmark.pedantic(run, rounds=rounds(ROUNDS), warmup_rounds=1, iterations=1)
    for c in table:
        c.grad = None
