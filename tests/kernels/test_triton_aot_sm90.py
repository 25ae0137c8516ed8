"""Every Triton kernel of the project, compiled ahead of time for sm_90 (H100/H200), on CPU.

Triton's interpreter (how the parity tests run) never type-checks a kernel as the compiler
does: dtype promotion, unsupported ops, constexpr misuse, register or shared-memory limits
only show when compiling. triton.compile with an explicit ``GPUTarget('cuda', 90, 32)``
runs the whole pipeline (TTIR -> TTGIR -> LLVM -> PTX -> cubin, with the wheel's ptxas)
without a GPU or driver. Each ``kernels.*`` module with Triton kernels exposes
``AOT_CONFIGS``: a list, or a callable returning one, of ``(kernel, signature, constexprs)``
or ``(kernel, signature, constexprs, options)`` entries (options: num_warps, num_stages),
or objects with those attributes; this test discovers them by importing every module of
``kernels`` (the LM-kernel modules are picked up when they exist).

Checks per configuration: it compiles; its shared memory fits sm_90's 227 KiB per block;
ptxas reports no spills and at most 255 registers per thread. For the DLRM embedding
also: every pointer offset that scales with a row id is int64 in the TTIR (int32 would
wrap at 2**31 elements; Criteo's table is 4 x 1,048,576 x 128 = 536,870,912 elements and a
single-GPU lookup batch 262,144 x 26 x 128 = 872,415,232, within 2.5x of that limit).

The default run compiles the first configuration of each (module, kernel); the full sweep
is marked slow (~130 configurations, 1-9 s each on the shared 2-core machine).
"""

import importlib
import os
import pkgutil
import re
import subprocess
import tempfile

import pytest

triton = pytest.importorskip('triton')

import kernels  # noqa: E402

SM90_SHARED_BYTES = 232_448  # cudaDevAttrMaxSharedMemoryPerBlockOptin on H100/H200
MAX_REGISTERS = 255


def _entries():
    """(module name, index, kernel, signature, constexprs, options) for every AOT config."""
    os.environ.pop('TRITON_INTERPRET', None)  # collection time: compiled kernels only
    out = []
    for info in pkgutil.iter_modules(kernels.__path__):
        module = importlib.import_module(f'kernels.{info.name}')
        configs = getattr(module, 'AOT_CONFIGS', None)
        if configs is None:
            continue
        if callable(configs):
            configs = configs()
        for i, entry in enumerate(configs):
            if isinstance(entry, tuple):
                kernel, signature, constexprs, *rest = entry
                options = rest[0] if rest else {}
            else:
                kernel, signature = entry.kernel, entry.signature
                constexprs = getattr(entry, 'constexprs', {})
                options = getattr(entry, 'options', {}) or {}
            out.append((info.name, i, kernel, dict(signature), dict(constexprs), dict(options)))
    return out


ENTRIES = _entries()
_seen = set()
PARAMS = []
for e in ENTRIES:
    key = (e[0], e[2].__name__)
    marks = [] if key not in _seen else [pytest.mark.slow]
    _seen.add(key)
    PARAMS.append(pytest.param(e, id=f'{e[0]}-{e[2].__name__}-{e[1]}', marks=marks))


def _compile(entry):
    _, _, kernel, signature, constexprs, options = entry
    from triton.backends.compiler import GPUTarget

    for name in constexprs:
        signature[name] = 'constexpr'
    src = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    return triton.compile(src, target=GPUTarget('cuda', 90, 32), options=options)


def _ptxas_report(ptx: str) -> str:
    from triton.backends.nvidia.compiler import get_ptxas

    ptxas = get_ptxas(90).path
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'k.ptx')
        with open(path, 'w') as f:
            f.write(ptx)
        result = subprocess.run(
            [ptxas, '-arch=sm_90a', '-v', path, '-o', os.path.join(tmp, 'k.cubin')],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    return result.stderr + result.stdout  # Triton targets sm_90a for capability 90


def test_the_project_kernels_are_discovered():
    modules = {e[0] for e in ENTRIES}
    assert {'triton_optim', 'triton_matrix_root', 'triton_embedding'} <= modules
    for optional in ('rms_norm', 'rope_qk_norm', 'fused_linear_cross_entropy'):
        if importlib.util.find_spec(f'kernels.{optional}') is not None:
            module = importlib.import_module(f'kernels.{optional}')
            if 'triton' in getattr(module, '__doc__', '').lower():
                assert optional in modules, f'kernels.{optional} has no AOT_CONFIGS'


@pytest.mark.parametrize('entry', PARAMS)
def test_compiles_for_sm90_within_limits(entry, monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    compiled = _compile(entry)
    assert 'cubin' in compiled.asm
    assert compiled.metadata.shared <= SM90_SHARED_BYTES, compiled.metadata.shared
    report = _ptxas_report(compiled.asm['ptx'])
    regs = [int(r) for r in re.findall(r'Used (\d+) registers', report)]
    assert regs and max(regs) <= MAX_REGISTERS, report
    spills = [int(s) for s in re.findall(r'(\d+) bytes spill stores', report)]
    assert not any(spills), report


_ADDPTR = re.compile(r'tt\.addptr [^:]+: (\S+(?: \S+)*?), (tensor<([0-9x]+)x(i32|i64)>|i32|i64)')


@pytest.mark.parametrize(
    'entry',
    [e for e in ENTRIES if e[0] == 'triton_embedding' and e[4].get('DIM') == 128],
    ids=lambda e: f'{e[2].__name__}-{e[1]}',
)
def test_embedding_row_offsets_are_int64(entry, monkeypatch):
    """In the TTIR, an offset into a data (non-i64) pointer is int32 only when it is the
    column arange (its last dim is BLOCK_D, or it is that 1-d vector); row-scaled offsets
    (row * DIM, and scalar bases of a row) must be i64."""
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    ttir = _compile(entry).asm['ttir']
    block_d = entry[4]['BLOCK_D']
    checked = 0
    for line in ttir.splitlines():
        if 'tt.addptr' not in line:
            continue
        m = _ADDPTR.search(line)
        assert m, line
        ptr_type, off_type, shape, elem = m.group(1), m.group(2), m.group(3), m.group(4)
        if '!tt.ptr<i64>' in ptr_type:
            continue  # the id and table loads: small indices into small tables
        checked += 1
        if off_type == 'i32' or elem == 'i32':
            dims = shape.split('x') if shape else []
            assert dims and int(dims[-1]) == block_d, f'int32 row offset: {line.strip()}'
    assert checked
    assert re.search(r'tt\.addptr [^\n]*(tensor<\d+x1xi64>|, i64)', ttir), 'no int64 row offset'
