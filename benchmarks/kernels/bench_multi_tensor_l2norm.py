"""Gradient-norm logging: kernels.multi_tensor_l2norm vs the PyTorch ways of doing it.

Run (from the repository root, on a quiet machine)::

    python -m pytest benchmarks/kernels/bench_multi_tensor_l2norm.py \
        --benchmark-json=benchmarks/results/multi_tensor_l2norm_<hw>_<yyyymmdd>.json

Smoke run (each provider once, no timing)::

    python -m pytest benchmarks/kernels/bench_multi_tensor_l2norm.py --benchmark-disable

Providers:
    reference: ``multi_tensor_l2norm_reference`` (per-tensor fp64 sums, the spec).
    ext: ``multi_tensor_l2norm``, i.e. the C++ kernel on CPU (skipped when not built).
    torch_foreach_norm: ``torch._foreach_norm`` then stack and norm.
    torch_vector_norm_loop: upstream's baseline,
        ``torch.norm(torch.stack([torch.norm(g) for g in grads]))``.

Peer (the report's "vs" column): ``torch_vector_norm_loop``, upstream's baseline. Bytes
moved: 4 per element (one fp32 read), for the report's GB/s and % of streaming bandwidth.

Parameter sets, one benchmark group each so the table shows the ratio between providers:
    resnet50: the 161 fp32 parameter tensors of torchvision's ResNet-50 (25,557,032
        elements, ~102 MB): bandwidth-bound, dominated by a few 1-2.4M-element tensors.
    many_small: 1000 fp32 tensors of 1024-4096 elements (~2.5M elements): dominated by
        per-tensor overhead, the case a fused multi-tensor op exists for.
"""

import pytest
import torch
from _harness import record_bytes_moved, rounds

from kernels import ext_available, multi_tensor_l2norm, multi_tensor_l2norm_reference


def resnet50_param_shapes() -> list[tuple[int, ...]]:
    """Parameter shapes of torchvision's ResNet-50, in ``model.parameters()`` order."""
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    inplanes = 64
    for stage, blocks in enumerate((3, 4, 6, 3)):
        planes = 64 * 2**stage
        for block in range(blocks):
            shapes += [(planes, inplanes, 1, 1), (planes,), (planes,)]
            shapes += [(planes, planes, 3, 3), (planes,), (planes,)]
            shapes += [(planes * 4, planes, 1, 1), (planes * 4,), (planes * 4,)]
            if block == 0:
                shapes += [(planes * 4, inplanes, 1, 1), (planes * 4,), (planes * 4,)]
            inplanes = planes * 4
    return shapes + [(1000, 2048), (1000,)]


def many_small_shapes(n: int = 1000) -> list[tuple[int, ...]]:
    gen = torch.Generator().manual_seed(0)
    return [(int(k),) for k in torch.randint(1024, 4097, (n,), generator=gen)]


PARAM_SETS = {'resnet50': resnet50_param_shapes, 'many_small': many_small_shapes}
# Rounds per set: enough for a stable median at ~10 ms (resnet50) and ~1 ms (many_small)
# per call on a 2-core CPU while keeping the slowest provider under ~30 s per set.
ROUNDS = {'resnet50': 30, 'many_small': 100}
WARMUP_ROUNDS = 3


def _torch_foreach_norm(grads):
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def _torch_vector_norm_loop(grads):
    return torch.norm(torch.stack([torch.norm(g) for g in grads]))


PROVIDERS = {
    'reference': multi_tensor_l2norm_reference,
    'ext': multi_tensor_l2norm,
    'torch_foreach_norm': _torch_foreach_norm,
    'torch_vector_norm_loop': _torch_vector_norm_loop,
}


@pytest.fixture(scope='module', params=list(PARAM_SETS))
def grads(request):
    gen = torch.Generator().manual_seed(0)
    shapes = PARAM_SETS[request.param]()
    return request.param, [torch.randn(s, generator=gen) for s in shapes]


@pytest.mark.parametrize('provider', list(PROVIDERS))
def test_multi_tensor_l2norm(benchmark, grads, provider):
    name, tensors = grads
    if provider == 'ext' and not ext_available():
        pytest.skip('kernels._C is not built')
    benchmark.group = name
    benchmark.extra_info.update(
        n_tensors=len(tensors),
        numel=sum(t.numel() for t in tensors),
        dtype='float32',
        torch_num_threads=torch.get_num_threads(),
        peer='torch_vector_norm_loop',
    )
    benchmark.pedantic(
        PROVIDERS[provider],
        args=(tensors,),
        rounds=rounds(ROUNDS[name]),
        warmup_rounds=WARMUP_ROUNDS,
        iterations=1,
    )
    # A norm reads every fp32 element once and writes a scalar: 4 bytes per element.
    record_bytes_moved(benchmark, 4 * benchmark.extra_info['numel'], 'cpu')
