"""kernels/triton_embedding.py: the Triton gather and deterministic backward of the chunked table.

Run in Triton's interpreter on CPU tensors (``TRITON_INTERPRET=1``, set per test), calling the
launchers directly; the ``gpu`` test runs them compiled through ``chunked_embedding``.

Tolerances. The forward is a copy: bitwise equal. Backward: each gradient row is the fp32 sum of
the r lookup gradients that hit it; the kernel and the reference (``index_add_`` into fp32)
add in different orders, so a row differs by <= r ulps of its fp32 sum. r <= ~40 here with
O(1) terms: rtol = atol = 1e-5 for fp32 gradients. bf16/fp16 gradients: both paths round
the fp32 sum once to the dtype, so they agree unless the two fp32 sums straddle a rounding
boundary: one ulp of the dtype (2**-7 relative for bf16, 2**-10 for fp16); atol 1e-5 for
sums that cancel to near zero.
"""

import pytest
import torch

pytest.importorskip('triton')

from kernels import chunked_embedding as ce
from kernels import triton_embedding as te

TOL = {
    torch.float32: {'rtol': 1e-5, 'atol': 1e-5},
    torch.bfloat16: {'rtol': 2.0**-7, 'atol': 1e-5},
    torch.float16: {'rtol': 2.0**-10, 'atol': 1e-5},
}


@pytest.fixture
def interpreter(monkeypatch):
    monkeypatch.setenv('TRITON_INTERPRET', '1')


def _chunks(rows, dim, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(r, dim, generator=g).to(dtype) for r in rows]


def _ids(rows, n, seed):
    """Random ids plus every chunk's first and last row and a hot id repeated 40 times."""
    g = torch.Generator().manual_seed(seed)
    total = sum(rows)
    ids = torch.randint(0, total, (n,), generator=g)
    edges, start = [], 0
    for r in rows:
        edges += [start, start + r - 1]
        start += r
    edges = torch.tensor(edges)
    ids[: edges.numel()] = edges
    ids[edges.numel() : edges.numel() + 40] = min(rows[0], total - 1)  # chunk 1's first row
    return ids[torch.randperm(n, generator=g)]


CASES = [
    ((5, 7, 1, 6), 8, 97),  # odd rows, a one-row chunk, 97 lookups (not a multiple of 32)
    ((33, 2, 17, 9), 12, 150),  # dim 12: fp32 rows of 48 bytes, masked columns (BLOCK_D 16)
    ((3,), 24, 64),  # one chunk
]


@pytest.mark.parametrize('rows,dim,n', CASES)
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_forward_and_backward_match_the_reference(interpreter, monkeypatch, rows, dim, n, dtype):
    if (dim * torch.empty((), dtype=dtype).element_size()) % 16:
        pytest.skip('rows must be 16-byte multiples')
    monkeypatch.setattr(te, '_PIECE', 16)  # hot ids span several pieces: the two-pass sum
    chunks = _chunks(rows, dim, dtype)
    ids = _ids(rows, n, seed=n)
    out = te.embedding_forward(ids, chunks)
    torch.testing.assert_close(out, te.embedding_forward_reference(ids, chunks), rtol=0, atol=0)
    torch.testing.assert_close(out, torch.cat(chunks)[ids], rtol=0, atol=0)

    grad = torch.randn(n, dim, generator=torch.Generator().manual_seed(1)).to(dtype)
    grads = [torch.full_like(c, float('nan')) for c in chunks]  # poisoned: every row written
    te.embedding_backward(grad, ids, grads)
    want = [torch.empty_like(c) for c in chunks]
    te.embedding_backward_reference(grad, ids, want)
    for a, b in zip(grads, want):
        torch.testing.assert_close(a, b, **TOL[dtype])
    # fp64 oracle of the whole table's gradient, rounded once.
    full = torch.zeros(sum(rows), dim, dtype=torch.float64).index_add_(0, ids, grad.double())
    torch.testing.assert_close(torch.cat(grads), full.to(dtype), **TOL[dtype])


def test_backward_is_bitwise_deterministic_across_runs_and_piece_sizes(interpreter, monkeypatch):
    rows, dim, n = (40, 40, 40, 40), 8, 400
    chunks = _chunks(rows, dim, torch.float32)
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 160, (n,), generator=g)
    ids[::3] = 39  # a hot id at the end of chunk 0: 134 repeats, 9 pieces of 16
    grad = torch.randn(n, dim, generator=g)
    monkeypatch.setattr(te, '_PIECE', 16)
    runs = []
    for _ in range(2):
        grads = [torch.empty_like(c) for c in chunks]
        te.embedding_backward(grad, ids, grads)
        runs.append(torch.cat(grads))
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    # The order of summation is fixed by the plan: lookup order within a piece, pieces in
    # order. Replaying that order in fp32 gives the same bits.
    plan = te.segment_plan(ids, 16)
    want = torch.zeros(160, dim)
    partial = {}
    for s, e, d in zip(plan['starts'].tolist(), plan['ends'].tolist(), plan['dest'].tolist()):
        acc = torch.zeros(dim)
        for j in plan['perm'][s:e].tolist():
            acc = acc + grad[j]
        if d >= 0:
            want[d] = acc
        else:
            partial[-1 - d] = acc
    for s, e, d in zip(
        plan['run_starts'].tolist(), plan['run_ends'].tolist(), plan['run_dest'].tolist()
    ):
        acc = torch.zeros(dim)
        for r in range(s, e):
            acc = acc + partial[r]
        want[d] = acc
    torch.testing.assert_close(runs[0], want, rtol=0, atol=0)


def test_segment_plan_covers_every_lookup_once_in_pieces_of_at_most_piece():
    ids = torch.tensor([7, 3, 7, 7, 0, 7, 3, 7, 7, 7, 2])
    plan = te.segment_plan(ids, 3)
    perm, starts, ends = plan['perm'], plan['starts'], plan['ends']
    assert torch.equal(torch.sort(perm).values, torch.arange(ids.numel()))
    assert torch.equal(starts[1:], ends[:-1]) and ends[-1] == ids.numel()
    assert int((ends - starts).max()) <= 3
    for s, e in zip(starts.tolist(), ends.tolist()):
        assert ids[perm[s:e]].unique().numel() == 1  # a piece never mixes ids
    # id 7 (7 lookups) -> 3 pieces; id 3 (2) one piece; 0 and 2 one each.
    assert int(plan['n_runs']) == 1 and int(plan['run_dest'][0]) == 7
    assert int(plan['n_scratch']) == 3
    assert sorted(d for d in plan['dest'].tolist() if d >= 0) == [0, 2, 3]


def test_empty_lookup(interpreter):
    chunks = _chunks((4, 4), 8, torch.float32)
    ids = torch.empty(0, dtype=torch.int64)
    assert te.embedding_forward(ids, chunks).shape == (0, 8)
    grads = [torch.full_like(c, 3.0) for c in chunks]
    te.embedding_backward(torch.empty(0, 8), ids, grads)
    assert all(bool((g == 0).all()) for g in grads)


def test_ineligible_chunks_are_rejected():
    assert not te.eligible(_chunks((4, 4), 3, torch.float32))  # 12-byte rows
    assert not te.eligible([torch.zeros(4, 8), torch.zeros(4, 8, dtype=torch.float64)])
    assert not te.eligible([torch.zeros(8, 4).t()])
    assert te.eligible(_chunks((4, 4), 8, torch.bfloat16))


def test_cpu_tensors_without_interpreter_raise(monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    with pytest.raises(RuntimeError, match='TRITON_INTERPRET'):
        te.embedding_forward(torch.tensor([0]), _chunks((4,), 8, torch.float32))


def test_import_has_no_side_effects():
    import subprocess
    import sys

    code = (
        'import sys, torch; import kernels.triton_embedding, kernels.chunked_embedding; '
        "assert 'triton' not in sys.modules; assert not torch.cuda.is_initialized()"
    )
    subprocess.run([sys.executable, '-c', code], check=True)


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16], ids=str)
def test_cuda_chunked_embedding_takes_the_triton_path(monkeypatch, dtype):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    calls = []
    for name in ('embedding_forward', 'embedding_backward'):
        real = getattr(te, name)
        monkeypatch.setattr(te, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    rows = (1000, 999, 1, 2048)
    chunks = [c.cuda().requires_grad_() for c in _chunks(rows, 128, dtype)]
    ids = _ids(rows, 26 * 512, seed=3).reshape(512, 26).cuda()
    ids[:, 0] = 1000  # 512 repeats: several pieces
    out = ce.chunked_embedding(ids, chunks)
    ref_chunks = [c.detach().clone().requires_grad_() for c in chunks]
    ref = ce.chunked_embedding_reference(ids, ref_chunks)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    w = torch.randn(out.shape, device='cuda', dtype=dtype)
    (out * w).float().sum().backward()
    first = [c.grad.clone() for c in chunks]
    for c in chunks:
        c.grad = None
    (ce.chunked_embedding(ids, chunks) * w).float().sum().backward()
    (ref * w).float().sum().backward()
    assert calls.count('embedding_forward') == 2 and calls.count('embedding_backward') == 2
    for a, b, c in zip(chunks, ref_chunks, first):
        torch.testing.assert_close(a.grad, c, rtol=0, atol=0)  # deterministic on the GPU
        torch.testing.assert_close(a.grad.float(), b.grad.float(), **TOL[dtype])
