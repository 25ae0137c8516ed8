"""Parity of the multi-tensor Triton optimizer kernels (kernels/triton_optim.py).

The kernels run on CPU tensors in Triton's interpreter (``TRITON_INTERPRET=1``, set per
test with ``monkeypatch`` so it never leaks into other tests), and natively on CUDA in the
``gpu`` test. Each is compared over several steps, params and state, against the plain
per-tensor references below, written from the formulas in the kernels' docstrings, and
``kernels.fused_optim``'s ``*_reference`` (the project's spec) where that module exists;
in fp32 also against the upstream implementations (torch.optim.AdamW/SGD, schedulefree).

The tensor list mixes awkward cases: 1, 257 and 105 elements, empty, 0-d, a full 2048
chunk, 3000 elements (a full chunk plus a masked tail), a channels_last 4-d tensor and a
view at a 4-byte offset (which goes to the unaligned launch).
"""

import os
import subprocess
import sys

import pytest
import torch

from tests.tolerances import tolerance

pytest.importorskip('triton')

from kernels import triton_optim

try:
    from kernels import fused_optim
except ImportError:  # written alongside this module; compare with it once it exists
    fused_optim = None

STEPS = 6
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@pytest.fixture
def interpreter(monkeypatch):
    """Runs the test with TRITON_INTERPRET=1; monkeypatch restores the environment."""
    monkeypatch.setenv('TRITON_INTERPRET', '1')


def _param_like(dtype, device, gen):
    """Fresh tensors in the awkward layouts listed in the module docstring."""
    out = []
    for shape in [(1,), (257,), (0,), (3, 5, 7), (), (2048,), (2, 1500)]:
        out.append(torch.randn(shape, generator=gen).to(device=device, dtype=dtype))
    cl = torch.randn((2, 3, 4, 5), generator=gen).to(device=device, dtype=dtype)
    out.append(cl.contiguous(memory_format=torch.channels_last))
    # One element into a buffer: 4 or 2 bytes past a 16-byte boundary.
    out.append(torch.randn(300, generator=gen).to(device=device, dtype=dtype)[1:])
    return out


def _state_like(params, gen, fill=None):
    out = []
    for p in params:
        t = torch.empty_like(p, dtype=torch.float32)  # keeps channels_last strides
        if fill is None:
            t.copy_(torch.rand(p.shape, generator=gen))
        else:
            t.fill_(fill)
        out.append(t)
    return out


def _grads(params, gen):
    out = []
    for p in params:
        g = torch.empty_like(p)
        g.copy_(torch.randn(p.shape, generator=gen))
        out.append(g)
    return out


def _misaligned_copy(ts):
    """Copies ``ts`` keeping the layouts, including the last tensor's odd offset."""
    out = [t.clone() for t in ts[:-1]]
    last = ts[-1]
    buf = torch.empty(last.numel() + 1, dtype=last.dtype, device=last.device)[1:]
    out.append(buf.copy_(last))
    return out


# ---------------------------------------------------------------- plain references


def adam_ref(params, grads, exp_avgs, exp_avg_sqs, *, step, lr, beta1, beta2, eps,
             weight_decay, nesterov):  # fmt: skip
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        p32, g32 = p.float(), g.float()
        p32.mul_(1 - lr * weight_decay)
        m.mul_(beta1).add_((1 - beta1) * g32)
        v.mul_(beta2).add_((1 - beta2) * (g32 * g32))
        m_num = beta1 * m + (1 - beta1) * g32 if nesterov else m
        m_hat = m_num / (1 - beta1**step)
        p32.sub_(lr * m_hat / ((v / (1 - beta2**step)).sqrt() + eps))
        p.copy_(p32)


def sgd_ref(params, grads, bufs, *, lr, momentum, dampening, weight_decay, nesterov,
            first_step):  # fmt: skip
    for i, (p, g) in enumerate(zip(params, grads)):
        p32 = p.float()
        g32 = g.float() + weight_decay * p32
        if momentum != 0:
            buf = bufs[i]
            if first_step:
                buf.copy_(g32)
            else:
                buf.mul_(momentum).add_((1 - dampening) * g32)
            g32 = g32 + momentum * buf if nesterov else buf
        p32.sub_(lr * g32)
        p.copy_(p32)


def schedule_free_ref(params, grads, zs, exp_avg_sqs, *, lr, ckp1, adaptive_y_lr, beta2,
                      bias_correction2, eps, weight_decay):  # fmt: skip
    for y, g, z, v in zip(params, grads, zs, exp_avg_sqs):
        y32, g32 = y.float(), g.float()
        v.mul_(beta2).add_((1 - beta2) * (g32 * g32))
        d = g32 / ((v / bias_correction2).sqrt() + eps)
        d = d + weight_decay * y32
        y32 = y32 + ckp1 * (z - y32)
        y32 = y32 + adaptive_y_lr * d
        z.sub_(lr * d)
        y.copy_(y32)


def _schedule_free_scalars(k, lr, beta1, beta2, warmup_steps, r, weight_lr_power, state):
    """Step k's scalars as schedulefree.AdamWScheduleFree.step computes them (v1.4.1)."""
    sched = (k + 1) / warmup_steps if k < warmup_steps else 1.0
    lr_k = lr * sched
    state['lr_max'] = lr_max = max(lr_k, state['lr_max'])
    weight = ((k + 1) ** r) * (lr_max**weight_lr_power)
    state['weight_sum'] += weight
    ckp1 = weight / state['weight_sum']
    return {
        'lr': lr_k,
        'ckp1': ckp1,
        'adaptive_y_lr': lr_k * (beta1 * (1 - ckp1) - 1),
        'beta2': beta2,
        'bias_correction2': 1 - beta2 ** (k + 1),
    }


def _references(local, name):
    """The local reference and, if present, ``kernels.fused_optim.<name>_reference``."""
    spec = getattr(fused_optim, f'{name}_reference', None)
    return [local] if spec is None else [local, spec]


def _assert_lists_close(actual, expected, **tol):
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        torch.testing.assert_close(a, e, **tol, msg=lambda m, i=i: f'tensor {i}: {m}')


# ---------------------------------------------------------------- interpreter parity


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('nesterov', [False, True], ids=['adamw', 'nadamw'])
def test_adam_matches_reference(interpreter, dtype, nesterov):
    gen = torch.Generator().manual_seed(0)
    params = _param_like(dtype, 'cpu', gen)
    state = [_state_like(params, gen), _state_like(params, gen)]
    refs = [
        (fn, [_misaligned_copy(params)] + [_misaligned_copy(s) for s in state])
        for fn in _references(adam_ref, 'adam')
    ]
    hp = {
        'lr': 3e-2,
        'beta1': 0.9,
        'beta2': 0.95,
        'eps': 1e-8,
        'weight_decay': 0.1,
        'nesterov': nesterov,
    }
    for step in range(1, STEPS + 1):
        grads = _grads(params, gen)
        triton_optim.adam_(params, grads, *state, step=step, **hp)
        for fn, ref in refs:
            fn(ref[0], grads, *ref[1:], step=step, **hp)
    for _, ref in refs:
        _assert_lists_close(params, ref[0], **tolerance('triton_optim_params', dtype))
        for got, want in zip(state, ref[1:]):
            _assert_lists_close(got, want, **tolerance('triton_optim_state', dtype))


SGD_CASES = {
    'momentum': {'momentum': 0.9, 'dampening': 0.0, 'nesterov': False},
    'nesterov': {'momentum': 0.9, 'dampening': 0.0, 'nesterov': True},
    'dampening': {'momentum': 0.8, 'dampening': 0.3, 'nesterov': False},
    'plain': {'momentum': 0.0, 'dampening': 0.0, 'nesterov': False},
}


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('case', list(SGD_CASES))
def test_sgd_matches_reference(interpreter, dtype, case):
    gen = torch.Generator().manual_seed(1)
    hp = dict(lr=0.05, weight_decay=5e-3, **SGD_CASES[case])
    params = _param_like(dtype, 'cpu', gen)
    bufs = _state_like(params, gen, fill=float('nan')) if hp['momentum'] else []
    refs = [
        (fn, _misaligned_copy(params), _misaligned_copy(bufs) if bufs else [])
        for fn in _references(sgd_ref, 'sgd')
    ]
    for step in range(STEPS):
        grads = _grads(params, gen)
        triton_optim.sgd_(params, grads, bufs, first_step=step == 0, **hp)
        for fn, ref_p, ref_b in refs:
            fn(ref_p, grads, ref_b, first_step=step == 0, **hp)
    for _, ref_p, ref_b in refs:
        _assert_lists_close(params, ref_p, **tolerance('triton_optim_params', dtype))
        _assert_lists_close(bufs, ref_b, **tolerance('triton_optim_state', dtype))


@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_schedule_free_matches_reference(interpreter, dtype):
    gen = torch.Generator().manual_seed(2)
    params = _param_like(dtype, 'cpu', gen)
    zs = [p.to(torch.float32, copy=True) for p in params]  # upstream: z = clone(p)
    zs[-1] = _misaligned_copy(zs)[-1]
    vs = _state_like(params, gen, fill=0.0)
    refs = [
        (fn, [_misaligned_copy(params), _misaligned_copy(zs), _misaligned_copy(vs)])
        for fn in _references(schedule_free_ref, 'schedule_free_adamw')
    ]
    sched_state = {'lr_max': -1.0, 'weight_sum': 0.0}
    for k in range(STEPS):
        grads = _grads(params, gen)
        hp = _schedule_free_scalars(k, 2e-2, 0.9, 0.99, 3, 0.75, 2.0, sched_state)
        hp.update(eps=1e-8, weight_decay=0.05)
        triton_optim.schedule_free_adamw_(params, grads, zs, vs, **hp)
        for fn, ref in refs:
            fn(ref[0], grads, ref[1], ref[2], **hp)
    for _, ref in refs:
        _assert_lists_close(params, ref[0], **tolerance('triton_optim_params', dtype))
        _assert_lists_close(zs, ref[1], **tolerance('triton_optim_state', dtype))
        _assert_lists_close(vs, ref[2], **tolerance('triton_optim_state', dtype))


# ---------------------------------------------------------------- upstream parity (fp32)


def _upstream_params(gen, n=3):
    return [torch.randn(s, generator=gen) for s in [(257,), (3, 5, 7), (2, 1500)][:n]]


def test_adam_matches_torch_adamw(interpreter):
    """nesterov=False is torch.optim.AdamW (foreach path: lerp for m, sqrt(v)/sqrt(bc2))."""
    gen = torch.Generator().manual_seed(3)
    params = _upstream_params(gen)
    torch_params = [p.clone().requires_grad_() for p in params]
    opt = torch.optim.AdamW(torch_params, lr=1e-2, betas=(0.9, 0.99), eps=1e-8,
                            weight_decay=0.1, foreach=True)  # fmt: skip
    ms = [torch.zeros_like(p) for p in params]
    vs = [torch.zeros_like(p) for p in params]
    for step in range(1, STEPS + 1):
        grads = _grads(params, gen)
        for tp, g in zip(torch_params, grads):
            tp.grad = g.clone()
        opt.step()
        triton_optim.adam_(params, grads, ms, vs, step=step, lr=1e-2, beta1=0.9, beta2=0.99,
                           eps=1e-8, weight_decay=0.1)  # fmt: skip
    tol = tolerance('optimizer_trajectory', torch.float32)
    _assert_lists_close(params, [p.detach() for p in torch_params], **tol)
    _assert_lists_close(ms, [opt.state[p]['exp_avg'] for p in torch_params], **tol)
    _assert_lists_close(vs, [opt.state[p]['exp_avg_sq'] for p in torch_params], **tol)


def test_sgd_matches_torch_sgd(interpreter):
    gen = torch.Generator().manual_seed(4)
    params = _upstream_params(gen)
    torch_params = [p.clone().requires_grad_() for p in params]
    hp = {'lr': 0.05, 'momentum': 0.9, 'dampening': 0.1, 'weight_decay': 1e-2, 'nesterov': False}
    opt = torch.optim.SGD(torch_params, foreach=True, **hp)
    bufs = [torch.empty_like(p) for p in params]
    for step in range(STEPS):
        grads = _grads(params, gen)
        for tp, g in zip(torch_params, grads):
            tp.grad = g.clone()
        opt.step()
        triton_optim.sgd_(params, grads, bufs, first_step=step == 0, **hp)
    tol = tolerance('optimizer_trajectory', torch.float32)
    _assert_lists_close(params, [p.detach() for p in torch_params], **tol)
    _assert_lists_close(bufs, [opt.state[p]['momentum_buffer'] for p in torch_params], **tol)


def test_schedule_free_matches_schedulefree_package(interpreter):
    """The kernel's inner loop inside upstream's step logic equals AdamWScheduleFree."""
    schedulefree = pytest.importorskip('schedulefree')
    gen = torch.Generator().manual_seed(5)
    params = _upstream_params(gen)
    torch_params = [p.clone().requires_grad_() for p in params]
    beta1, beta2, lr, warmup, r, wlp, wd = 0.9, 0.99, 2e-2, 3, 0.75, 2.0, 0.05
    opt = schedulefree.AdamWScheduleFree(
        torch_params, lr=lr, betas=(beta1, beta2), eps=1e-8, weight_decay=wd,
        warmup_steps=warmup, r=r, weight_lr_power=wlp, foreach=True,
    )  # fmt: skip
    opt.train()
    zs = [p.clone() for p in params]
    vs = [torch.zeros_like(p) for p in params]
    sched_state = {'lr_max': -1.0, 'weight_sum': 0.0}
    for k in range(STEPS):
        grads = _grads(params, gen)
        for tp, g in zip(torch_params, grads):
            tp.grad = g.clone()
        opt.step()
        hp = _schedule_free_scalars(k, lr, beta1, beta2, warmup, r, wlp, sched_state)
        triton_optim.schedule_free_adamw_(params, grads, zs, vs, eps=1e-8, weight_decay=wd, **hp)
    tol = tolerance('optimizer_trajectory', torch.float32)
    _assert_lists_close(params, [p.detach() for p in torch_params], **tol)
    _assert_lists_close(zs, [opt.state[p]['z'] for p in torch_params], **tol)
    _assert_lists_close(vs, [opt.state[p]['exp_avg_sq'] for p in torch_params], **tol)


# ---------------------------------------------------------------- API behaviour


def test_tensor_scalars_and_mixed_dtypes_match_separate_calls(interpreter):
    """lr as a 0-d tensor, and one call over fp32+bf16 lists, equal float/per-dtype calls."""
    gen = torch.Generator().manual_seed(6)
    p32, pbf = _upstream_params(gen, 2), [t.bfloat16() for t in _upstream_params(gen, 2)]
    g32, gbf = _grads(p32, gen), _grads(pbf, gen)
    m, v = _state_like(p32 + pbf, gen), _state_like(p32 + pbf, gen)
    a = [t.clone() for t in (p32 + pbf)], [t.clone() for t in m], [t.clone() for t in v]
    hp = {'step': 2, 'beta1': 0.9, 'beta2': 0.99, 'eps': 1e-8, 'weight_decay': 0.1}
    triton_optim.adam_(a[0], g32 + gbf, a[1], a[2], lr=torch.tensor(1e-2), **hp)
    triton_optim.adam_(p32, g32, m[:2], v[:2], lr=1e-2, **hp)
    triton_optim.adam_(pbf, gbf, m[2:], v[2:], lr=1e-2, **hp)
    for got, want in zip(a, (p32 + pbf, m, v)):
        _assert_lists_close(got, want, rtol=0, atol=0)


def test_plan_is_cached_and_rebuilt_for_new_tensors(interpreter):
    triton_optim._PLANS.clear()
    gen = torch.Generator().manual_seed(7)
    params = _upstream_params(gen)
    bufs = [torch.empty_like(p) for p in params]
    hp = {'lr': 0.1, 'momentum': 0.9, 'dampening': 0.0, 'weight_decay': 0.0, 'nesterov': False}
    triton_optim.sgd_(params, _grads(params, gen), bufs, first_step=True, **hp)
    plans = len(triton_optim._PLANS)
    grads = _grads(params, gen)
    triton_optim.sgd_(params, grads, bufs, first_step=False, **hp)
    triton_optim.sgd_(params, grads, bufs, first_step=False, **hp)
    # The first call's grads were freed, so the second may or may not reuse their memory.
    assert len(triton_optim._PLANS) <= plans + 1
    plans = len(triton_optim._PLANS)
    triton_optim.sgd_(params, grads, bufs, first_step=False, **hp)
    assert len(triton_optim._PLANS) == plans
    triton_optim.sgd_([p.clone() for p in params], grads, bufs, first_step=False, **hp)
    assert len(triton_optim._PLANS) == plans + 1


def test_empty_inputs_are_no_ops(interpreter):
    triton_optim.adam_([], [], [], [], step=1, lr=1.0, beta1=0.9, beta2=0.9, eps=1e-8,
                       weight_decay=0.0)  # fmt: skip
    p = [torch.empty(0), torch.empty(0, 3)]
    triton_optim.sgd_(p, [t.clone() for t in p], [], lr=1.0, momentum=0.0, dampening=0.0,
                      weight_decay=0.0, nesterov=False, first_step=True)  # fmt: skip


def _sgd_call(params, grads, bufs):
    triton_optim.sgd_(params, grads, bufs, lr=0.1, momentum=0.9, dampening=0.0,
                      weight_decay=0.0, nesterov=False, first_step=False)  # fmt: skip


@pytest.mark.parametrize(
    'case, error',
    [
        ('grad_dtype', TypeError),
        ('state_dtype', TypeError),
        ('param_dtype', TypeError),
        ('length', ValueError),
        ('shape', ValueError),
        ('strides', ValueError),
        ('not_dense', ValueError),
        ('buffers_without_momentum', ValueError),
    ],
)
def test_bad_inputs_raise(interpreter, case, error):
    p, g, b = [torch.zeros(4, 6)], [torch.zeros(4, 6)], [torch.zeros(4, 6)]
    if case == 'grad_dtype':
        g = [g[0].bfloat16()]
    elif case == 'state_dtype':
        b = [b[0].double()]
    elif case == 'param_dtype':
        p, g = [p[0].double()], [g[0].double()]
    elif case == 'length':
        b = b + b
    elif case == 'shape':
        g = [torch.zeros(6, 4)]
    elif case == 'strides':
        g = [torch.zeros(6, 4).t()]
    elif case == 'not_dense':
        p, g, b = [torch.zeros(4, 12)[:, ::2]], [torch.zeros(4, 12)[:, ::2]], [torch.zeros(4, 6)]
    if case == 'buffers_without_momentum':
        with pytest.raises(error):
            triton_optim.sgd_(p, g, b, lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0,
                              nesterov=False, first_step=False)  # fmt: skip
        return
    with pytest.raises(error):
        _sgd_call(p, g, b)


def test_cpu_tensors_without_interpreter_raise(monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    p = [torch.zeros(3)]
    with pytest.raises(RuntimeError, match='TRITON_INTERPRET'):
        _sgd_call(p, [torch.zeros(3)], [torch.zeros(3)])


def test_available(monkeypatch):
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    assert triton_optim.available()
    monkeypatch.delenv('TRITON_INTERPRET')
    assert triton_optim.available() == torch.cuda.is_available()


def test_import_has_no_side_effects():
    """Importing the module imports no triton, sets no env var and leaves CUDA alone."""
    code = (
        'import os, sys, torch; env = dict(os.environ); import kernels.triton_optim; '
        "assert 'triton' not in sys.modules, 'triton imported'; "
        "assert dict(os.environ) == env, 'environment changed'; "
        "assert not torch.cuda.is_initialized(), 'CUDA initialised'"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    subprocess.run([sys.executable, '-c', code], cwd=root, check=True)


def test_full_chunks_compile_to_vector_accesses(monkeypatch):
    """Compiles the AdamW kernel for sm_90 (PTX; no GPU needed) and checks that the
    unmasked path of aligned launches uses 16-byte accesses and the masked tail does not."""
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    import triton
    from triton.backends.compiler import GPUTarget

    kernel = triton_optim._kernels(False)['adam']
    constexprs = {'PARAM_DTYPE': triton.language.float32, 'NESTEROV': False, 'DEVICE_BIAS': False, 'ALIGNED': True,
                  'SOFT_BF16': False, 'BLOCK': triton_optim._BLOCK}  # fmt: skip
    signature = {}
    for i, name in enumerate(kernel.arg_names):
        is_table = i < 7
        signature[name] = (
            'constexpr' if name in constexprs
            else '*i64' if is_table
            else '*fp32' if name == 'hyper_ptr'
            else 'fp32'
        )  # fmt: skip
    src = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    # The pip wheel ships the NVIDIA backend and ptxas, so this runs on CPU-only machines.
    ptx = triton.compile(src, target=GPUTarget('cuda', 90, 32)).asm['ptx']
    # 4 streams read and 3 written, 16 fp32 per thread = 4 vectors each.
    assert ptx.count('ld.global.v4.b32') == 16
    assert ptx.count('st.global.v4.b32') == 12
    assert ptx.count('ld.global.b32') >= 64  # masked tail: one element per access; + lr


# ---------------------------------------------------------------- native CUDA


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
def test_kernels_on_cuda_match_reference(monkeypatch, dtype):
    """Compiled kernels on the GPU vs the references on the same CUDA tensors."""
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    gen = torch.Generator().manual_seed(8)
    params = _param_like(dtype, 'cuda', gen)
    p_tol = tolerance('triton_optim_params', dtype)
    s_tol = tolerance('triton_optim_state', dtype)

    state = [_state_like(params, gen), _state_like(params, gen)]
    p, s = _misaligned_copy(params), [_misaligned_copy(t) for t in state]
    lr = torch.tensor(3e-2, device='cuda')
    for step in range(1, STEPS + 1):
        grads = _grads(params, gen)
        hp = {
            'step': step,
            'beta1': 0.9,
            'beta2': 0.95,
            'eps': 1e-8,
            'weight_decay': 0.1,
            'nesterov': True,
        }
        triton_optim.adam_(p, grads, *s, lr=lr, **hp)
        adam_ref(params, grads, *state, lr=3e-2, **hp)
    _assert_lists_close(p, params, **p_tol)
    for got, want in zip(s, state):
        _assert_lists_close(got, want, **s_tol)

    bufs = _state_like(params, gen)
    p, b = _misaligned_copy(params), _misaligned_copy(bufs)
    hp = {'lr': 0.05, 'momentum': 0.9, 'dampening': 0.0, 'weight_decay': 5e-3, 'nesterov': True}
    for step in range(STEPS):
        grads = _grads(params, gen)
        triton_optim.sgd_(p, grads, b, first_step=step == 0, **hp)
        sgd_ref(params, grads, bufs, first_step=step == 0, **hp)
    _assert_lists_close(p, params, **p_tol)
    _assert_lists_close(b, bufs, **s_tol)

    zs, vs = [t.to(torch.float32, copy=True) for t in params], _state_like(params, gen, fill=0.0)
    p, z, v = _misaligned_copy(params), _misaligned_copy(zs), _misaligned_copy(vs)
    sched_state = {'lr_max': -1.0, 'weight_sum': 0.0}
    for k in range(STEPS):
        grads = _grads(params, gen)
        hp = _schedule_free_scalars(k, 2e-2, 0.9, 0.99, 3, 0.75, 2.0, sched_state)
        hp.update(eps=1e-8, weight_decay=0.05)
        triton_optim.schedule_free_adamw_(p, grads, z, v, **hp)
        schedule_free_ref(params, grads, zs, vs, **hp)
    _assert_lists_close(p, params, **p_tol)
    _assert_lists_close(z, zs, **s_tol)
    _assert_lists_close(v, vs, **s_tol)


@pytest.mark.parametrize('nesterov', [False, True])
def test_adam_step_tensor_capturable_path_matches_int_step(interpreter, nesterov):
    """A 1-element step tensor (bias corrections computed on the device) = the int step."""
    gen = torch.Generator().manual_seed(7)
    params = [torch.randn(s, generator=gen) for s in [(257,), (2, 1500), (1,)]]
    twin = [p.clone() for p in params]
    state = [[torch.zeros_like(p) for p in params] for _ in range(2)]
    twin_state = [[torch.zeros_like(p) for p in params] for _ in range(2)]
    step_t = torch.zeros(1)
    lr_t = torch.full((), 1e-2)
    hp = {'beta1': 0.9, 'beta2': 0.999, 'eps': 1e-8, 'weight_decay': 0.1, 'nesterov': nesterov}
    for step in range(1, STEPS + 1):
        grads = [torch.randn(p.shape, generator=gen) for p in params]
        step_t += 1
        triton_optim.adam_(params, grads, *state, step=step_t, lr=lr_t, **hp)
        triton_optim.adam_(twin, grads, *twin_state, step=step, lr=1e-2, **hp)
    # Bias corrections from the device's float64 pow vs the host's, each rounded to fp32
    # once: equal in all measured cases; the parameter tolerance admits a 1-ulp difference.
    for a, b in zip(params + state[0] + state[1], twin + twin_state[0] + twin_state[1]):
        torch.testing.assert_close(a, b, **tolerance('triton_optim_params', torch.float32))
    with pytest.raises(ValueError, match='one element'):
        triton_optim.adam_(params, grads, *state, step=torch.ones(2), lr=1e-2, **hp)
