"""Multi-tensor launch plans for the Triton optimizer kernels (kernels/triton_optim.py).

A plan turns lists of tensors into, per (param dtype, 16-byte alignment) group, int64
device tables: each list's base addresses, the element counts, and per chunk its tensor
and block index. Plans are validated when built and cached (LRU) on every address, size
and dtype, so a steady-state step only computes the key. Step-varying scalars travel as
a small fp32 device tensor (``device_scalars``), cached per value for Python floats.
"""

import collections
from collections.abc import Sequence

import torch

Scalar = float | torch.Tensor
_BLOCK = 2048  # elements per program: 16 per thread at 4 warps = four 16-byte fp32 vectors
_PARAM_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_PLAN_CACHE_SIZE = 64
_SCALAR_CACHE_SIZE = 64
_ALIGN_BYTES = 16


class _LRU(collections.OrderedDict):
    """A small least-recently-used dict: ``get`` refreshes, ``put`` evicts the oldest."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get(self, key):
        value = super().get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key, value):
        self[key] = value
        if len(self) > self.size:
            self.popitem(last=False)


_PLANS = _LRU(_PLAN_CACHE_SIZE)
_SCALARS = _LRU(_SCALAR_CACHE_SIZE)


class _Group:
    """One launch: the tensors of one param dtype and their device tables."""

    __slots__ = ('aligned', 'dtype', 'n_chunks', 'tables')

    def __init__(self, dtype, tables, n_chunks, aligned):
        self.dtype = dtype
        self.tables = tables  # (ptr row per list..., numels, chunk_tensors, chunk_blocks)
        self.n_chunks = n_chunks
        self.aligned = aligned


def _is_dense(t: torch.Tensor) -> bool:
    """Whether ``t`` covers a gap-free, non-overlapping block of memory (any dim order)."""
    if t.is_contiguous():
        return True
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride()), key=lambda s: s[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def _validate(op: str, names: Sequence[str], lists: Sequence[list], n_param_like: int) -> None:
    """Full checks, run when a plan is built. The first ``n_param_like`` lists take the
    params' dtype; the rest are fp32 state."""
    params = lists[0]
    device = params[0].device
    for name, lst in zip(names, lists):
        if len(lst) != len(params):
            raise ValueError(f'{op}: {name} has {len(lst)} tensors; params has {len(params)}')
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor) or p.dtype not in _PARAM_DTYPES:
            kind = p.dtype if isinstance(p, torch.Tensor) else type(p).__name__
            raise TypeError(f'{op}: params[{i}] is {kind}; expected float32/bfloat16/float16')
        for j, (name, lst) in enumerate(zip(names, lists)):
            t = lst[i]
            if not isinstance(t, torch.Tensor):
                raise TypeError(f'{op}: {name}[{i}] is a {type(t).__name__}, not a Tensor')
            want = p.dtype if j < n_param_like else torch.float32
            if t.dtype != want:
                raise TypeError(f'{op}: {name}[{i}] is {t.dtype}; expected {want}')
            if t.device != device:
                raise ValueError(f'{op}: {name}[{i}] is on {t.device}; params[0] is on {device}')
            if t.layout != torch.strided or not _is_dense(t):
                raise ValueError(f'{op}: {name}[{i}] is not a dense strided tensor')
            if t.shape != p.shape or (t.numel() > 1 and t.stride() != p.stride()):
                raise ValueError(
                    f'{op}: {name}[{i}] has shape {tuple(t.shape)} and strides {t.stride()}; '
                    f'params[{i}] has {tuple(p.shape)} and {p.stride()}'
                )


def _to_device_int64(rows: list[list[int]], device: torch.device) -> list[torch.Tensor]:
    """Packs int rows into one int64 tensor on ``device`` (one copy) and returns row views.

    Every row starts on a 16-byte boundary so that Triton, which specialises pointer
    arguments on 16-byte alignment, compiles one variant whatever the list lengths.
    """
    padded = [(len(r) + 1) // 2 * 2 for r in rows]
    host = torch.zeros(sum(padded), dtype=torch.int64, pin_memory=device.type == 'cuda')
    offset = 0
    for row, width in zip(rows, padded):
        host[offset : offset + len(row)] = torch.tensor(row, dtype=torch.int64)
        offset += width
    # Pinned + non_blocking: no host sync; the caching host allocator keeps the buffer
    # alive until the copy has run.
    packed = host.to(device, non_blocking=True)
    views, offset = [], 0
    for row, width in zip(rows, padded):
        views.append(packed[offset : offset + len(row)])
        offset += width
    return views


def _build_plan(lists: Sequence[list]) -> list[_Group]:
    params = lists[0]
    device = params[0].device
    # One launch per (dtype, alignment): a tensor whose addresses are not all 16-byte
    # aligned (a view at an odd offset, e.g. into a flat gradient bucket) goes to a
    # second, scalar-access launch instead of taking vector accesses away from the rest.
    by_group: dict[tuple[torch.dtype, bool], list[int]] = {}
    for i, p in enumerate(params):
        if p.numel() == 0:
            continue
        aligned = all(lst[i].data_ptr() % _ALIGN_BYTES == 0 for lst in lists)
        by_group.setdefault((p.dtype, aligned), []).append(i)
    groups = []
    for (dtype, aligned), idx in by_group.items():
        ptr_rows = [[lst[i].data_ptr() for i in idx] for lst in lists]
        numels = [params[i].numel() for i in idx]
        chunk_tensors, chunk_blocks = [], []
        for k, n in enumerate(numels):
            blocks = -(-n // _BLOCK)
            chunk_tensors += [k] * blocks
            chunk_blocks += range(blocks)
        tables = _to_device_int64([*ptr_rows, numels, chunk_tensors, chunk_blocks], device)
        groups.append(_Group(dtype, tuple(tables), len(chunk_tensors), aligned))
    return groups


def _plan(op: str, names: Sequence[str], lists: Sequence[list], n_param_like: int):
    """Returns the cached launch plan for these lists, building and validating on a miss."""
    params = lists[0]
    try:
        key = (
            op,
            params[0].device,
            tuple(map(len, lists)),
            tuple(t.data_ptr() for lst in lists for t in lst),
            tuple(p.numel() for p in params),
            tuple(t.dtype for lst in lists[:n_param_like] for t in lst),
        )
    except AttributeError:  # a non-tensor entry: let the checks name it
        _validate(op, names, lists, n_param_like)
        raise
    plan = _PLANS.get(key)
    if plan is None:
        _validate(op, names, lists, n_param_like)
        plan = _build_plan(lists)
        _PLANS.put(key, plan)
    return plan


def _host_scalar(x: Scalar) -> float:
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


def _device_scalars(values: Sequence[Scalar], device: torch.device) -> torch.Tensor:
    """The step-varying scalars as one fp32 tensor on ``device``, for the kernel to load.

    A single fp32 1-element tensor already on ``device`` is used as is (no copy, graph
    capturable); other tensors are converted on the device; Python floats are copied once
    per distinct value (pinned, non-blocking) and cached.
    """
    if all(not isinstance(v, torch.Tensor) for v in values):
        key = (device, tuple(float(v) for v in values))
        out = _SCALARS.get(key)
        if out is None:
            host = torch.tensor(key[1], dtype=torch.float32, pin_memory=device.type == 'cuda')
            out = host.to(device, non_blocking=True)
            _SCALARS.put(key, out)
        return out
    parts = []
    for v in values:
        if isinstance(v, torch.Tensor):
            if v.numel() != 1:
                raise ValueError(f'scalar tensors must have one element; got shape {v.shape}')
            parts.append(v.detach().reshape(1).to(device=device, dtype=torch.float32))
        else:
            parts.append(torch.full((1,), float(v), dtype=torch.float32, device=device))
    return parts[0] if len(parts) == 1 else torch.cat(parts)
