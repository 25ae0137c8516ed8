"""Triton lookup from a chunked embedding table and its deterministic dense backward.

The CUDA path of ``kernels.chunked_embedding`` (Criteo DLRM: 4 chunks of 1,048,576 x 128,
536,870,912 row-elements, 2.15 GB in fp32). Spec: ``embedding_forward_reference`` and
``embedding_backward_reference`` below (plain torch, per chunk, no concatenation).

Forward (``embedding_forward``): one program gathers ``_ROWS`` lookups x the whole
embedding dim. The chunks are read in place: the launch gets an int64 table of the
chunks' base addresses and their first rows; a program makes one masked load per chunk
(only the lanes whose id falls in it touch memory), so no table is ever concatenated.

Backward (``embedding_backward``): each chunk's gradient is dense (the optimizers update
every row), so the buffers are zeroed and every touched row is written exactly once:
    1. sort the ids once (stable: equal ids keep lookup order), find the runs of equal ids;
    2. cut each run into pieces of at most ``_PIECE`` lookups, so a hot id (Criteo has ids
       that a large share of a batch hits) is summed by many programs, not one;
    3. one program per piece sums its gradient rows in lookup order, in fp32; a run of one
       piece is written straight to its table row, others go to an fp32 scratch row;
    4. one program per multi-piece run sums its pieces' scratch rows in order and writes
       the table row.
Every sum has a fixed order, so the result is bitwise the same on every run (no atomics).

Offsets: every ``row * dim`` product is formed in int64. Criteo's table fits int32 in
elements (2**29) but not in bytes, and a lookup batch times dim (262,144 x 26 x 128 =
872 M on one GPU) is within 2.5x of 2**31; int64 costs nothing measurable here.

Dtypes: fp32, bf16 and fp16 chunks (all of one dtype); gradients of that dtype,
accumulated in fp32 and rounded once (round to nearest even). Triton's interpreter casts
fp32 -> bf16 by truncation, so interpreted kernels round bf16 with integer ops
(``SOFT_BF16``), as kernels/_triton_optim_kernels.py does.

Runs on CUDA tensors; with ``TRITON_INTERPRET=1`` also on CPU tensors in the interpreter
(how CI tests it). Importing this module imports no triton and touches no device.
The kernels avoid triton.language's own @jit helpers (tl.zeros, tl.sum): the interpreter
cannot run them when triton was imported before ``TRITON_INTERPRET`` was set.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

__all__ = [
    'AOT_CONFIGS',
    'available',
    'embedding_backward',
    'embedding_backward_reference',
    'embedding_forward',
    'embedding_forward_reference',
    'eligible',
    'segment_plan',
]

triton = None  # bound by _kernels(); the interpreter resolves names in module globals
tl = None

_ROWS = 32  # lookups per forward program: 32 x 128 fp32 = 16 KB moved per program
_SEG_ROWS = 16  # rows loaded per inner step of a segment sum (independent loads in flight)
_PIECE = 256  # most lookups one backward program sums: 16 inner steps
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


# Triton's presence and interpreter mode: one definition for every Triton module of ours.
from kernels._triton_optim_kernels import _interpret, _triton_importable, available  # noqa: E402, F401


@functools.cache
def _kernels(interpret: bool):
    """Imports triton and defines the kernels once per interpreter mode (see triton_optim)."""
    global triton, tl
    import triton
    import triton.language as tl

    assert triton.knobs.runtime.interpret == interpret

    @triton.jit
    def _gather_kernel(
        ids_ptr, out_ptr, chunk_addrs, chunk_starts, n,
        DTYPE: tl.constexpr, NUM_CHUNKS: tl.constexpr, DIM: tl.constexpr,
        BLOCK_D: tl.constexpr, ROWS: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0)
        pos = pid.to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)
        cols = tl.arange(0, BLOCK_D)
        in_rows = pos < n
        col_ok = cols < DIM
        ids = tl.load(ids_ptr + pos, mask=in_rows, other=-1)
        out = tl.full((ROWS, BLOCK_D), 0.0, tl.float32).to(DTYPE)
        for k in tl.static_range(NUM_CHUNKS):
            base = tl.load(chunk_addrs + k).to(tl.pointer_type(DTYPE))
            base = tl.multiple_of(base, 16)
            lo = tl.load(chunk_starts + k)
            hi = tl.load(chunk_starts + k + 1)
            hit = (ids >= lo) & (ids < hi)
            local = tl.where(hit, ids - lo, 0)  # int64: local * DIM never wraps
            ptrs = base + local[:, None] * DIM + cols[None, :]
            rows = tl.load(ptrs, mask=hit[:, None] & col_ok[None, :], other=0.0)
            out = tl.where(hit[:, None], rows, out)
        out_ptrs = out_ptr + pos[:, None] * DIM + cols[None, :]
        tl.store(out_ptrs, out, mask=in_rows[:, None] & col_ok[None, :])

    @triton.jit
    def _segment_sum_kernel(
        src_ptr, perm_ptr, starts_ptr, ends_ptr, dest_ptr, n_segments_ptr,
        scratch_ptr, chunk_addrs, chunk_starts,
        DTYPE: tl.constexpr, HAS_PERM: tl.constexpr,
        NUM_CHUNKS: tl.constexpr, DIM: tl.constexpr, BLOCK_D: tl.constexpr,
        SEG_ROWS: tl.constexpr, SOFT_BF16: tl.constexpr,
    ):  # fmt: skip
        # One program per segment [start, end) of source rows (through perm if HAS_PERM),
        # summed in order in fp32. dest >= 0: a table row id, written to its chunk;
        # dest < 0: scratch row -1 - dest (fp32).
        pid = tl.program_id(0).to(tl.int64)
        n_segments = tl.load(n_segments_ptr)
        if pid < n_segments:
            cols = tl.arange(0, BLOCK_D)
            col_ok = cols < DIM
            start = tl.load(starts_ptr + pid)
            end = tl.load(ends_ptr + pid)
            acc = tl.full((BLOCK_D,), 0.0, tl.float32)
            j = start
            while j < end:
                for r in tl.static_range(SEG_ROWS):
                    ok = j + r < end
                    if HAS_PERM:
                        row = tl.load(perm_ptr + j + r, mask=ok, other=0)
                    else:
                        row = j + r
                    vals = tl.load(src_ptr + row * DIM + cols, mask=col_ok & ok, other=0.0)
                    acc += vals.to(tl.float32)
                j += SEG_ROWS
            dest = tl.load(dest_ptr + pid)
            if dest < 0:
                tl.store(scratch_ptr + (-1 - dest) * DIM + cols, acc, mask=col_ok)
            else:
                if SOFT_BF16:  # round to nearest even by hand; see the module docstring
                    bits = acc.to(tl.uint32, bitcast=True)
                    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
                    out = bits.to(tl.uint16).to(tl.bfloat16, bitcast=True)
                else:
                    out = acc.to(DTYPE)
                for k in tl.static_range(NUM_CHUNKS):
                    lo = tl.load(chunk_starts + k)
                    hi = tl.load(chunk_starts + k + 1)
                    if (dest >= lo) & (dest < hi):
                        base = tl.load(chunk_addrs + k).to(tl.pointer_type(DTYPE))
                        base = tl.multiple_of(base, 16)
                        tl.store(base + (dest - lo) * DIM + cols, out, mask=col_ok)

    dtypes = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}
    return {'gather': _gather_kernel, 'segment_sum': _segment_sum_kernel, 'dtypes': dtypes}


# ----------------------------------------------------------------------------- references


def embedding_forward_reference(flat: torch.Tensor, chunks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Rows ``flat`` (1-d int64) of the virtual ``torch.cat(chunks)``, per chunk ``index_select``."""
    out = chunks[0].new_empty((flat.numel(), chunks[0].shape[1]))
    start = 0
    for c in chunks:
        sel = ((flat >= start) & (flat < start + c.shape[0])).nonzero().squeeze(1)
        out[sel] = c.index_select(0, flat[sel] - start)
        start += c.shape[0]
    return out


def embedding_backward_reference(
    grad: torch.Tensor, flat: torch.Tensor, grads: Sequence[torch.Tensor]
) -> None:
    """Fills the dense ``grads`` (one per chunk): zero, then add each lookup's row, in fp32."""
    start = 0
    g32 = grad.reshape(-1, grads[0].shape[1]).float()
    for buf in grads:
        sel = ((flat >= start) & (flat < start + buf.shape[0])).nonzero().squeeze(1)
        acc = torch.zeros(buf.shape, dtype=torch.float32, device=buf.device)
        acc.index_add_(0, flat[sel] - start, g32[sel])
        buf.copy_(acc)
        start += buf.shape[0]


# ----------------------------------------------------------------------------- host side


def _block_d(dim: int) -> int:
    return 1 << max(0, (dim - 1).bit_length())


def eligible(chunks: Sequence[torch.Tensor]) -> bool:
    """Whether the kernels take these chunks (else the caller uses the torch path)."""
    try:
        _check('eligible', chunks)
    except ValueError:
        return False
    return True


def _check(op: str, chunks: Sequence[torch.Tensor]) -> None:
    if not chunks:
        raise ValueError(f'{op}: no chunks')
    dim, dtype, device = chunks[0].shape[1], chunks[0].dtype, chunks[0].device
    for k, c in enumerate(chunks):
        if c.ndim != 2 or c.shape[1] != dim or c.dtype != dtype or c.device != device:
            raise ValueError(
                f'{op}: chunk {k} is {tuple(c.shape)} {c.dtype} on {c.device}; expected '
                f'(rows, {dim}) {dtype} on {device}'
            )
        if not c.is_contiguous() or c.data_ptr() % 16:
            raise ValueError(f'{op}: chunk {k} must be contiguous and 16-byte aligned')
    if dtype not in _DTYPES:
        raise ValueError(f'{op}: chunks are {dtype}; expected one of {_DTYPES}')
    if (dim * chunks[0].element_size()) % 16:
        raise ValueError(f'{op}: a row of {dim} x {dtype} is not a multiple of 16 bytes')


def _tables(chunks: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(chunk base addresses, chunk first rows + total rows) as int64 device tensors."""
    device = chunks[0].device
    addrs = torch.tensor([c.data_ptr() for c in chunks], dtype=torch.int64)
    starts = [0]
    for c in chunks:
        starts.append(starts[-1] + c.shape[0])
    bounds = torch.tensor(starts, dtype=torch.int64)
    if device.type == 'cuda':
        addrs, bounds = addrs.pin_memory(), bounds.pin_memory()
    return addrs.to(device, non_blocking=True), bounds.to(device, non_blocking=True)


def _launch_mode(op: str, device: torch.device) -> bool:
    if not _triton_importable():
        raise RuntimeError(f'{op}: triton is not installed')
    interpret = _interpret()
    if device.type == 'cpu' and not interpret:
        raise RuntimeError(f'{op}: CPU tensors need TRITON_INTERPRET=1 (or use the reference)')
    return interpret


def embedding_forward(flat: torch.Tensor, chunks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Rows ``flat`` of the virtual ``torch.cat(chunks)``, shape ``(len(flat), dim)``.

    Args:
        flat: 1-d int64 ids in ``[0, total rows)``, on the chunks' device (not checked
            here: the caller validates the range).
        chunks: 2-d contiguous chunks of one dtype (fp32/bf16/fp16), rows of 16-byte multiples.
    """
    _check('embedding_forward', chunks)
    interpret = _launch_mode('embedding_forward', chunks[0].device)
    flat = flat.reshape(-1).to(torch.int64).contiguous()
    dim = chunks[0].shape[1]
    out = chunks[0].new_empty((flat.numel(), dim))
    if flat.numel() == 0:
        return out
    kernels = _kernels(interpret)
    addrs, bounds = _tables(chunks)
    kernels['gather'][(triton.cdiv(flat.numel(), _ROWS),)](
        flat, out, addrs, bounds, flat.numel(),
        DTYPE=kernels['dtypes'][chunks[0].dtype], NUM_CHUNKS=len(chunks), DIM=dim,
        BLOCK_D=_block_d(dim), ROWS=_ROWS, num_warps=4,
    )  # fmt: skip
    return out


def segment_plan(flat: torch.Tensor, piece: int = _PIECE) -> dict[str, torch.Tensor]:
    """Sorts the ids once and cuts the runs of equal ids into pieces (plain torch).

    Returns int64 device tensors: ``perm`` (lookup positions in sorted order, stable),
    per piece ``starts``/``ends`` (into ``perm``) and ``dest`` (the table row, or
    ``-1 - scratch row`` when its run has several pieces), per multi-piece run
    ``run_starts``/``run_ends`` (into scratch) and ``run_dest`` (its table row), and
    ``n_pieces``/``n_runs`` as 1-element tensors. One host sync (the piece count).
    """
    sorted_ids, perm = torch.sort(flat, stable=True)
    n = flat.numel()
    device = flat.device
    pos = torch.arange(n, device=device)
    head = torch.ones(n, dtype=torch.bool, device=device)
    head[1:] = sorted_ids[1:] != sorted_ids[:-1]
    # First position of each lookup's run (a running max of the heads' positions).
    run_first = torch.cummax(torch.where(head, pos, 0), 0).values
    offset = pos - run_first
    piece_head = offset % piece == 0
    piece_starts = piece_head.nonzero().squeeze(1)  # the sync: sizes the launches
    piece_ends = torch.cat([piece_starts[1:], piece_starts.new_tensor([n])])
    # A piece's run has several pieces iff it is not both first and last of its run.
    first_piece = head[piece_starts]
    last_piece = torch.ones_like(first_piece)
    last_piece[:-1] = head[piece_ends[:-1]]
    multi = ~(first_piece & last_piece)
    rank = torch.cumsum(multi, 0) - 1
    row_ids = sorted_ids[piece_starts]
    dest = torch.where(multi, -1 - rank, row_ids)
    run_mask = multi & first_piece
    run_starts = rank[run_mask]
    n_scratch = multi.sum().reshape(1)
    run_ends = torch.cat([run_starts[1:], n_scratch])
    return {
        'perm': perm,
        'starts': piece_starts,
        'ends': piece_ends,
        'dest': dest,
        'n_pieces': torch.tensor([piece_starts.numel()], device=device),
        'run_starts': run_starts,
        'run_ends': run_ends,
        'run_dest': row_ids[run_mask],
        'n_runs': torch.tensor([run_starts.numel()], device=device),
        'n_scratch': n_scratch,
    }


def embedding_backward(
    grad: torch.Tensor, flat: torch.Tensor, grads: Sequence[torch.Tensor]
) -> None:
    """Fills the dense per-chunk gradients ``grads`` from the lookup gradient ``grad``.

    Args:
        grad: ``(len(flat), dim)`` gradient of the forward's output, the chunks' dtype.
        flat: the forward's 1-d int64 ids.
        grads: one contiguous ``(rows_k, dim)`` buffer per chunk (contents overwritten).
    """
    _check('embedding_backward', grads)
    interpret = _launch_mode('embedding_backward', grads[0].device)
    dim = grads[0].shape[1]
    flat = flat.reshape(-1).to(torch.int64).contiguous()
    g = grad.reshape(-1, dim).contiguous()
    for buf in grads:
        buf.zero_()
    if flat.numel() == 0:
        return
    plan = segment_plan(flat, _PIECE)
    kernels = _kernels(interpret)
    addrs, bounds = _tables(grads)
    scratch_rows = int(plan['n_scratch'])  # a host sync; plan made a few (launch sizes)
    scratch = torch.empty((max(scratch_rows, 1), dim), dtype=torch.float32, device=g.device)
    common = dict(
        DTYPE=kernels['dtypes'][grads[0].dtype], NUM_CHUNKS=len(grads), DIM=dim,
        BLOCK_D=_block_d(dim), SEG_ROWS=_SEG_ROWS,
        SOFT_BF16=interpret and grads[0].dtype == torch.bfloat16, num_warps=1,
    )  # fmt: skip
    kernels['segment_sum'][(plan['starts'].numel(),)](
        g, plan['perm'], plan['starts'], plan['ends'], plan['dest'], plan['n_pieces'],
        scratch, addrs, bounds, HAS_PERM=True, **common,
    )  # fmt: skip
    if plan['run_starts'].numel():
        kernels['segment_sum'][(plan['run_starts'].numel(),)](
            scratch, plan['perm'], plan['run_starts'], plan['run_ends'], plan['run_dest'],
            plan['n_runs'], scratch, addrs, bounds, HAS_PERM=False,
            **common,
        )  # fmt: skip


# ----------------------------------------------------------------------------- AOT configs


def _aot_configs() -> list[tuple]:
    """(kernel, signature, constexprs, options) for every launch configuration above.

    Read by tests/kernels/test_triton_aot_sm90.py, which compiles each for sm_90.
    Criteo's shape (dim 128, 4 chunks) in every dtype, plus an odd dim (masking).
    """
    k = _kernels(False)
    out = []
    for torch_dtype, name in ((torch.float32, 'fp32'), (torch.bfloat16, 'bf16'), (torch.float16, 'fp16')):
        for dim in (128, 24):
            dt = k['dtypes'][torch_dtype]
            gather_sig = {
                'ids_ptr': '*i64', 'out_ptr': f'*{name}', 'chunk_addrs': '*i64',
                'chunk_starts': '*i64', 'n': 'i32',
            }  # fmt: skip
            gather_const = {'DTYPE': dt, 'NUM_CHUNKS': 4, 'DIM': dim, 'BLOCK_D': _block_d(dim),
                            'ROWS': _ROWS}  # fmt: skip
            out.append((k['gather'], gather_sig, gather_const, {'num_warps': 4}))
            for has_perm, src in ((True, name), (False, 'fp32')):
                sig = {
                    'src_ptr': f'*{src}', 'perm_ptr': '*i64', 'starts_ptr': '*i64',
                    'ends_ptr': '*i64', 'dest_ptr': '*i64', 'n_segments_ptr': '*i64',
                    'scratch_ptr': '*fp32', 'chunk_addrs': '*i64', 'chunk_starts': '*i64',
                }  # fmt: skip
                const = {'DTYPE': dt, 'HAS_PERM': has_perm, 'NUM_CHUNKS': 4, 'DIM': dim,
                         'BLOCK_D': _block_d(dim), 'SEG_ROWS': _SEG_ROWS, 'SOFT_BF16': False}  # fmt: skip
                out.append((k['segment_sum'], sig, const, {'num_warps': 1}))
    return out


# A callable, so importing this module imports no triton; the AOT test calls it.
AOT_CONFIGS = _aot_configs
