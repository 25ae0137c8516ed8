"""kernels/chunked_embedding.py: the lookup from a chunked table, its dense backward, reuse.

Tolerances: the forward is a copy (bitwise equal to the reference on every path). Backward:
each gradient row is the sum of the lookup gradients that hit it; the reference
(``torch.cat(chunks)[ids]``'s index backward) may add repeats in another order, so a row
with r repeats differs by <= r ulps of its sum: r <= 12 here with O(1) terms, so
rtol = atol = 1e-5 (measured <= 1e-6).
"""

import pytest
import torch

from kernels import _ext
from kernels import chunked_embedding as ce

BWD = {'rtol': 1e-5, 'atol': 1e-5}


def _chunks(rows, dim, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(r, dim, generator=g).to(dtype).requires_grad_() for r in rows]


def _twin(chunks):
    return [c.detach().clone().requires_grad_() for c in chunks]


CASES = [
    ((5, 7, 1, 6), 8, (4, 26)),
    ((1024, 1024, 1024, 1024), 128, (64, 26)),
    ((3,), 5, (11,)),
    ((4, 4), 1, (0, 26)),
]


@pytest.mark.parametrize('rows,dim,shape', CASES)
@pytest.mark.parametrize('path', ['ext', 'torch'])
def test_forward_and_backward_match_the_concatenate_path(monkeypatch, rows, dim, shape, path):
    if path == 'ext' and not _ext.ext_available():
        pytest.skip('kernels._C is not built')
    if path == 'torch':
        monkeypatch.setattr(ce, '_use_ext', lambda chunks: False)
    chunks = _chunks(rows, dim)
    ref_chunks = _twin(chunks)
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, sum(rows), shape, generator=g)
    if idx.numel():
        idx.view(-1)[: min(12, idx.numel())] = sum(rows) - 1  # repeats of the last row
    out = ce.chunked_embedding(idx, chunks)
    ref = ce.chunked_embedding_reference(idx, ref_chunks)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    w = torch.randn(out.shape, generator=g)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    for a, b in zip(chunks, ref_chunks):
        torch.testing.assert_close(a.grad, b.grad, **BWD)


def test_out_of_range_index_names_the_problem():
    chunks = _chunks((4, 4), 3)
    for bad in (8, -1):
        with pytest.raises((IndexError, RuntimeError), match='outside the table'):
            ce.chunked_embedding(torch.tensor([[0, bad]]), chunks)


@pytest.mark.skipif(not _ext.ext_available(), reason='kernels._C is not built')
def test_ext_backward_is_deterministic_across_thread_counts():
    chunks = _chunks((70_000, 70_000), 16)
    idx = torch.randint(0, 140_000, (4096, 26), generator=torch.Generator().manual_seed(2))
    idx[:, :4] = 5  # many repeats of one row
    w = torch.randn(4096, 26, 16, generator=torch.Generator().manual_seed(3))
    grads = []
    threads = torch.get_num_threads()
    for n in (1, threads):
        torch.set_num_threads(n)
        try:
            for c in chunks:
                c.grad = None
            (ce.chunked_embedding(idx, chunks, reuse_grad_buffers=False) * w).sum().backward()
            grads.append([c.grad.clone() for c in chunks])
        finally:
            torch.set_num_threads(threads)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_grad_buffers_are_reused_only_when_free():
    chunks = _chunks((6, 9), 4)
    ref_chunks = _twin(chunks)
    idx = torch.tensor([[0, 3, 14, 14], [7, 1, 2, 3]])
    w = torch.randn(2, 4, 4)

    def step(scale):
        (ce.chunked_embedding(idx, chunks) * w * scale).sum().backward()
        (ce.chunked_embedding_reference(idx, ref_chunks) * w * scale).sum().backward()

    step(1.0)
    first = [c.grad.untyped_storage().data_ptr() for c in chunks]
    for c, r in zip(chunks, ref_chunks):
        c.grad, r.grad = None, None  # zero_grad(set_to_none=True)
    step(2.0)
    assert [c.grad.untyped_storage().data_ptr() for c in chunks] == first  # reused, no allocation
    step(3.0)  # accumulation into the adopted buffer: must not alias it
    for a, b in zip(chunks, ref_chunks):
        torch.testing.assert_close(a.grad, b.grad, **BWD)
    kept = [c.grad for c in chunks]
    for c in chunks:
        c.grad = None
    (ce.chunked_embedding(idx, chunks, reuse_grad_buffers=False) * w).sum().backward()
    assert all(
        c.grad.untyped_storage().data_ptr() != k.untyped_storage().data_ptr()
        for c, k in zip(chunks, kept)
    )


def test_bf16_chunks_take_the_torch_path():
    chunks = _chunks((5, 5), 4, dtype=torch.bfloat16)
    ref_chunks = _twin(chunks)
    idx = torch.tensor([1, 9, 9, 0])
    out = ce.chunked_embedding(idx, chunks)
    ref = ce.chunked_embedding_reference(idx, ref_chunks)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    out.float().sum().backward()
    ref.float().sum().backward()
    for a, b in zip(chunks, ref_chunks):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)  # sums of at most two ones


def test_torch_compile_sees_one_op_with_a_fake_implementation():
    chunks = _chunks((5, 7, 1, 6), 8)
    ref_chunks = _twin(chunks)
    idx = torch.randint(0, 19, (4, 26), generator=torch.Generator().manual_seed(4))
    compiled = torch.compile(
        lambda i, cs: ce.chunked_embedding(i, cs).square().sum(dim=1), fullgraph=True
    )
    out = compiled(idx, chunks)
    ref = ce.chunked_embedding_reference(idx, ref_chunks).square().sum(dim=1)
    # inductor reduces the 26 squares in another order: a few ulps of the sums.
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    ref.sum().backward()
    for a, b in zip(chunks, ref_chunks):
        torch.testing.assert_close(a.grad, b.grad, **BWD)
