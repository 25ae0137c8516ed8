"""Embedding lookup from a table stored as several chunks, without concatenating them.

AlgoPerf's Criteo DLRM keeps its 4,194,304 x 128 table as four ``embedding_chunk_k``
parameters and upstream's PyTorch model runs ``torch.cat(chunks)[ids]`` every forward: a
2.15 GB copy to read 26 rows per example. ``chunked_embedding(indices, chunks)`` returns the
same rows (bit for bit: a lookup is a copy) and gives each chunk a dense gradient, as the
optimizers expect.

Paths, chosen per call:
    * CPU, fp32 contiguous chunks, ``kernels._C`` built: the C++ op in
      csrc/chunked_embedding.cpp (multi-threaded row copies; a backward that zeroes and
      accumulates per row range, race-free and deterministic).
    * CUDA, chunks of one dtype (fp32/bf16/fp16), contiguous, rows of 16-byte multiples,
      triton importable: the Triton kernels of kernels/triton_embedding.py (a gather that
      reads the chunks in place; a backward that sorts the ids once, sums each run of equal
      ids in a fixed order in fp32 and writes each touched row once: deterministic).
    * Otherwise (other dtypes or layouts, no extension, no triton): the same result from
      plain torch ops, per chunk ``index_select`` forward and ``index_add_`` backward,
      never concatenating.

Gradient buffers: at Criteo's size most of a backward's time goes into *allocating* the
2.15 GB of dense gradient (page faults on fresh memory: measured ~0.9 s on the dev
machine for ``torch.zeros`` vs 0.09 s to zero an existing buffer). So with
``reuse_grad_buffers=True`` (the default) the op keeps each chunk's gradient storage and
hands it out again on the next backward when it is provably free: autograd then stores it
as ``chunk.grad``; it is reused only after ``chunk.grad`` was reset to None or points to
another tensor. A reference to an old ``chunk.grad`` kept past ``zero_grad()`` would see
the next step's gradient; pass ``reuse_grad_buffers=False`` if you keep such references.

The forward and backward are ``torch.library`` custom ops (``algoperf::chunked_embedding_*``),
so ``torch.compile`` treats the lookup as one opaque node with a fake (meta) implementation
and an autograd formula. They are registered when this module is imported (the one import
side effect, confined to the ``algoperf`` op namespace: dynamo cannot trace a registration,
so a first call inside a compiled region could not do it); ``import kernels`` does not
import this module.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch

from kernels import _ext, triton_embedding

__all__ = ['chunked_embedding', 'chunked_embedding_reference']

# id(chunk) -> (weak ref to chunk, untyped storage of its last gradient buffer). Keyed by
# id because tensors compare elementwise; the weak ref's callback drops the entry when the
# chunk dies, so a freed parameter's 0.5 GB buffer is not kept alive.
_GRAD_STORAGE: dict[int, tuple[weakref.ref, torch.UntypedStorage]] = {}


def _stored(chunk: torch.Tensor) -> torch.UntypedStorage | None:
    entry = _GRAD_STORAGE.get(id(chunk))
    return entry[1] if entry is not None and entry[0]() is chunk else None


def _store(chunk: torch.Tensor, storage: torch.UntypedStorage) -> None:
    key = id(chunk)
    _GRAD_STORAGE[key] = (
        weakref.ref(chunk, lambda _, key=key: _GRAD_STORAGE.pop(key, None)),
        storage,
    )


def chunked_embedding_reference(
    indices: torch.Tensor, chunks: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Upstream's path: ``torch.cat(chunks)[indices]`` (shape ``indices.shape + (dim,)``)."""
    return torch.cat(list(chunks))[indices]


def _use_ext(chunks: Sequence[torch.Tensor]) -> bool:
    return (
        all(
            c.device.type == 'cpu' and c.dtype == torch.float32 and c.is_contiguous()
            for c in chunks
        )
        and _ext.load_ext() is not None
        and not torch.compiler.is_compiling()
    )


def _use_triton(chunks: Sequence[torch.Tensor]) -> bool:
    return (
        all(c.is_cuda for c in chunks)
        and triton_embedding.eligible(chunks)
        and triton_embedding.available()
    )


def _per_chunk(flat: torch.Tensor, chunks: Sequence[torch.Tensor]):
    """Yields (k, positions of ``flat`` that fall in chunk k, their rows within chunk k)."""
    start = 0
    for k, c in enumerate(chunks):
        stop = start + c.shape[0]
        sel = ((flat >= start) & (flat < stop)).nonzero().squeeze(1)
        yield k, sel, flat[sel] - start
        start = stop


def _grad_buffer(chunk: torch.Tensor, reuse: bool) -> torch.Tensor:
    """A (rows, dim) tensor for chunk's gradient: the previous step's storage when free.

    Free means: we handed it out before, and ``chunk.grad`` no longer uses it (it is None or
    another tensor). Returned as a fresh tensor object over that storage, so autograd's
    AccumulateGrad, seeing a tensor nobody else references, adopts it as ``chunk.grad``
    without a copy.
    """
    if not reuse:
        return torch.empty_like(chunk, memory_format=torch.contiguous_format)
    storage = _stored(chunk)
    current = chunk.grad
    in_use = (
        current is not None
        and storage is not None
        and current.untyped_storage().data_ptr() == storage.data_ptr()
    )
    if storage is None or in_use or storage.nbytes() != chunk.numel() * chunk.element_size():
        buf = torch.empty_like(chunk, memory_format=torch.contiguous_format)
        if not in_use:
            _store(chunk, buf.untyped_storage())
        return buf
    return torch.empty(0, dtype=chunk.dtype, device=chunk.device).set_(
        storage, 0, chunk.shape, chunk.stride()
    )


@torch.library.custom_op('algoperf::chunked_embedding_fwd', mutates_args=())
def _forward(indices: torch.Tensor, chunks: list[torch.Tensor], reuse: bool) -> torch.Tensor:
    del reuse  # a backward option, saved by _setup_context
    flat = indices.reshape(-1).to(torch.int64).contiguous()
    rows = sum(c.shape[0] for c in chunks)
    if _use_ext(chunks):
        out = _ext.load_ext().chunked_embedding_forward(flat, list(chunks))
    else:
        # One host sync on CUDA; an id outside the table must fail here, not read memory.
        if flat.numel() and bool(((flat < 0) | (flat >= rows)).any()):
            raise IndexError(f'chunked_embedding: an index is outside the table of {rows} rows')
        if _use_triton(chunks):
            out = triton_embedding.embedding_forward(flat, chunks)
            return out.reshape(*indices.shape, chunks[0].shape[1])
        out = torch.empty(
            flat.numel(), chunks[0].shape[1], dtype=chunks[0].dtype, device=chunks[0].device
        )
        for k, sel, rows_k in _per_chunk(flat, chunks):
            out[sel] = chunks[k].index_select(0, rows_k)
    return out.reshape(*indices.shape, chunks[0].shape[1])


@_forward.register_fake
def _(indices, chunks, reuse):
    return chunks[0].new_empty((*indices.shape, chunks[0].shape[1]))


@torch.library.custom_op('algoperf::chunked_embedding_bwd', mutates_args=())
def _backward(
    grad: torch.Tensor, indices: torch.Tensor, chunks: list[torch.Tensor], reuse: bool
) -> list[torch.Tensor]:
    flat = indices.reshape(-1).to(torch.int64).contiguous()
    dim = chunks[0].shape[1]
    g = grad.reshape(-1, dim).contiguous()
    grads = [_grad_buffer(c, reuse) for c in chunks]
    if _use_ext(chunks) and g.dtype == torch.float32:
        _ext.load_ext().chunked_embedding_backward(g, flat, grads)
        return grads
    if _use_triton(chunks) and g.dtype == chunks[0].dtype:
        triton_embedding.embedding_backward(g, flat, grads)
        return grads
    for k, sel, rows_k in _per_chunk(flat, chunks):
        grads[k].zero_()
        grads[k].index_add_(0, rows_k, g[sel].to(grads[k].dtype))
    return grads


@_backward.register_fake
def _(grad, indices, chunks, reuse):
    return [torch.empty_like(c) for c in chunks]


def _setup_context(ctx, inputs, output):
    indices, chunks, reuse = inputs
    ctx.save_for_backward(indices)
    ctx.chunks = chunks  # read only for shapes, dtypes and to find their buffers
    ctx.reuse = reuse


def _autograd_backward(ctx, grad):
    (indices,) = ctx.saved_tensors
    grads = _backward(grad, indices, list(ctx.chunks), ctx.reuse)
    return None, grads, None


_forward.register_autograd(_autograd_backward, setup_context=_setup_context)


def chunked_embedding(
    indices: torch.Tensor, chunks: Sequence[torch.Tensor], *, reuse_grad_buffers: bool = True
) -> torch.Tensor:
    """Rows ``indices`` of ``torch.cat(chunks)``, shape ``indices.shape + (dim,)``.

    Args:
        indices: integer tensor of row ids in ``[0, sum of chunk rows)`` (reduce ids modulo
            the vocabulary first, as upstream does); IndexError otherwise.
        chunks: 2-d tensors with the same number of columns (the embedding dim).
        reuse_grad_buffers: reuse each chunk's gradient storage across steps (module
            docstring); False allocates fresh gradients every backward.
    """
    return _forward(indices, list(chunks), reuse_grad_buffers)
