"""The GPU benchmark suites of scripts/gpu_check.sh: one JSON and one Markdown table.

Run (on a CUDA machine, from the repository root)::

    python3 benchmarks/gpu/run_suites.py --out DIR [--steps-file FILE] [--dry-run]

Each suite is a function returning rows ``{suite, case, provider, ms, ...}``; a suite that
raises records its error (one row, ``error``) and the next one runs. Timing: CUDA events
through ``triton.testing.do_bench`` (median, after warm-up), rotating nothing: every
input here is far larger than the 60 MB L2 except the small-shape root blocks. Ratios are
within one run ("vs" columns name the peer). ``--dry-run`` runs every suite on CPU at tiny
sizes (Triton kernels in the interpreter, host timers): it checks the code paths, and its
numbers mean nothing. Environment (GPU, driver, versions, commit) comes from
benchmarks/_harness.py's ``environment_info``.

Suites (targets from issue 17):
    copy_bandwidth   device-to-device copy, bytes read + written: the % denominator.
    fused_updates    AdamW / SGD / Schedule-Free at 10 M and 100 M fp32 params (8 tensors)
                     vs torch.optim(fused=True) (AdamW, SGD) and the schedulefree package
                     when installed; % of copy bandwidth at 28 / 20 / 28 bytes per param.
    cuda_graph       the capturable AdamW (device step and lr) captured and replayed vs
                     eager launches.
    shampoo_roots    batched coupled-Newton roots (Triton) vs fp32 eigh, with each
                     one's max relative error vs fp64 (equal accuracy is the claim).
    embedding        Criteo's 4 x 1,048,576 x 128 table, 26 lookups x batch, fwd+bwd:
                     Triton vs per-chunk index_select/index_add_ vs torch.cat.
    lm_loss_head     kernels.fused_linear_cross_entropy vs its reference, if present.
    lm_train_step    finewebedu_lm train step (12 layers, batch 8 x 1024, fwd + bwd +
                     NAdamW): all speed techniques vs upstream's path vs every switch off
                     (benchmarks/workloads/bench_finewebedu_lm_step.py's gpu_suite_rows).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'benchmarks')]

import torch  # noqa: E402


class Ctx:
    """Sizes and the timer for one run (real GPU or CPU dry run)."""

    def __init__(self, dry: bool):
        self.dry = dry
        self.device = 'cpu' if dry else 'cuda'
        self.copy_gbps: float | None = None

    def time_ms(self, fn, warmup_ms: int = 25, rep_ms: int = 100) -> float:
        if self.dry:
            fn()
            start = time.perf_counter()
            fn()
            return (time.perf_counter() - start) * 1e3
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode='median'))

    def pct(self, nbytes: float, ms: float) -> float | None:
        if not self.copy_gbps:
            return None
        return round(100.0 * nbytes / (ms / 1e3) / 1e9 / self.copy_gbps, 1)


def suite_copy_bandwidth(ctx: Ctx) -> list[dict]:
    n = 2**16 if ctx.dry else 2**30  # 4 GiB fp32 per array on the GPU
    a = torch.ones(n, device=ctx.device)
    b = torch.empty_like(a)
    ms = ctx.time_ms(lambda: b.copy_(a))
    ctx.copy_gbps = 2 * 4 * n / (ms / 1e3) / 1e9
    return [{'case': f'{4 * n / 2**30:.3g} GiB', 'provider': 'copy_', 'ms': ms,
             'gbps': round(ctx.copy_gbps, 1)}]  # fmt: skip


def _param_lists(ctx, n_total, n_tensors=8):
    g = torch.Generator(device=ctx.device).manual_seed(0)
    size = n_total // n_tensors
    mk = lambda: [torch.randn(size, device=ctx.device, generator=g) for _ in range(n_tensors)]  # noqa: E731
    return mk(), mk(), [t.abs() for t in mk()], [t.abs() for t in mk()]


def suite_fused_updates(ctx: Ctx) -> list[dict]:
    from kernels import fused_optim as fo

    rows = []
    sizes = {'10k': 10_000} if ctx.dry else {'10M': 10_000_000, '100M': 100_000_000}
    for label, n in sizes.items():
        p, g, m, v = _param_lists(ctx, n)
        hp = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)
        ours = ctx.time_ms(lambda: fo.adam_(p, g, m, v, step=10, **hp))
        tp = [t.clone().requires_grad_() for t in p]
        for t, gg in zip(tp, g):
            t.grad = gg.clone()
        opt = torch.optim.AdamW(tp, lr=1e-3, fused=not ctx.dry)
        opt.step()
        peer = ctx.time_ms(opt.step)
        nb = 28 * n
        rows += [
            {'case': f'adamw {label}', 'provider': 'kernels.adam_', 'ms': ours,
             'pct_copy_bw': ctx.pct(nb, ours), 'vs_peer': round(peer / ours, 2)},
            {'case': f'adamw {label}', 'provider': 'torch AdamW(fused=True)', 'ms': peer,
             'pct_copy_bw': ctx.pct(nb, peer)},
        ]  # fmt: skip
        del opt, tp
        sgd_hp = dict(lr=1e-2, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=True)
        ours = ctx.time_ms(lambda: fo.sgd_(p, g, m, first_step=False, **sgd_hp))
        tp = [t.clone().requires_grad_() for t in p]
        for t, gg in zip(tp, g):
            t.grad = gg.clone()
        opt = torch.optim.SGD(tp, lr=1e-2, momentum=0.9, nesterov=True, fused=not ctx.dry)
        opt.step()
        peer = ctx.time_ms(opt.step)
        rows += [
            {'case': f'sgd {label}', 'provider': 'kernels.sgd_', 'ms': ours,
             'pct_copy_bw': ctx.pct(20 * n, ours), 'vs_peer': round(peer / ours, 2)},
            {'case': f'sgd {label}', 'provider': 'torch SGD(fused=True)', 'ms': peer,
             'pct_copy_bw': ctx.pct(20 * n, peer)},
        ]  # fmt: skip
        del opt, tp
        sf = dict(lr=1e-3, ckp1=0.1, adaptive_y_lr=-1e-3, beta2=0.999, bias_correction2=0.01,
                  eps=1e-8, weight_decay=0.0)  # fmt: skip
        ours = ctx.time_ms(lambda: fo.schedule_free_adamw_(p, g, m, v, **sf))
        row = {'case': f'schedule_free {label}', 'provider': 'kernels.schedule_free_adamw_',
               'ms': ours, 'pct_copy_bw': ctx.pct(28 * n, ours)}  # fmt: skip
        try:
            import schedulefree

            tp = [t.clone().requires_grad_() for t in p]
            for t, gg in zip(tp, g):
                t.grad = gg.clone()
            opt = schedulefree.AdamWScheduleFree(tp, lr=1e-3)
            opt.train()
            opt.step()
            peer = ctx.time_ms(opt.step)
            row['vs_peer'] = round(peer / ours, 2)
            rows.append(row)
            rows.append({'case': f'schedule_free {label}', 'provider': 'schedulefree package',
                         'ms': peer, 'pct_copy_bw': ctx.pct(28 * n, peer)})  # fmt: skip
            del opt, tp
        except ImportError:
            row['note'] = 'schedulefree not installed: no peer'
            rows.append(row)
        del p, g, m, v
        if not ctx.dry:
            torch.cuda.empty_cache()
    return rows


def suite_cuda_graph(ctx: Ctx) -> list[dict]:
    if ctx.dry:
        return [{'case': 'capturable adamw', 'provider': 'skipped', 'note': 'needs CUDA'}]
    from kernels import fused_optim as fo

    rows = []
    for label, n, tensors in (('161 tensors, 1M', 1_000_000, 161), ('8 tensors, 10M', 10_000_000, 8)):
        p, g, m, v = _param_lists(ctx, n, tensors)
        step = torch.ones((), device='cuda')
        lr = torch.tensor(1e-3, device='cuda')

        def update():
            step.add_(1)
            fo.adam_(p, g, m, v, step=step, lr=lr, beta1=0.9, beta2=0.999, eps=1e-8,
                     weight_decay=0.01)  # fmt: skip

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                update()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            update()
        eager = ctx.time_ms(update)
        replay = ctx.time_ms(graph.replay)
        rows += [
            {'case': label, 'provider': 'graph replay', 'ms': replay,
             'vs_peer': round(eager / replay, 2)},
            {'case': label, 'provider': 'eager launch', 'ms': eager},
        ]  # fmt: skip
    return rows


def _spd(n, batch, device, kappa=1e3):
    g = torch.Generator().manual_seed(n)
    out = []
    for _ in range(batch):
        U, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
        lam = torch.logspace(0, -3, n, dtype=torch.float64)
        out.append((U * lam) @ U.T)
    return torch.stack(out).float().to(device)


def suite_shampoo_roots(ctx: Ctx) -> list[dict]:
    from kernels import matrix_root as mr

    rows = []
    cases = ((32, 2),) if ctx.dry else ((512, 16), (1024, 8))
    for n, batch in cases:
        A = _spd(n, batch, ctx.device)
        newton = ctx.time_ms(lambda: mr.newton_inverse_root(A, 4, 1e-12))
        eigh = ctx.time_ms(lambda: mr.eigh_inverse_root(A, 4, 1e-12))
        x_newton, _ = mr.newton_inverse_root(A, 4, 1e-12)
        x_eigh, _ = mr.eigh_inverse_root(A, 4, 1e-12)
        err = lambda x: float(mr.relative_error(x, A, 4, 1e-12).max())  # noqa: E731
        rows += [
            {'case': f'{batch} x {n}^2, kappa 1e3, p 4', 'provider': 'newton (triton)',
             'ms': newton, 'rel_err': f'{err(x_newton):.2e}', 'vs_peer': round(eigh / newton, 2)},
            {'case': f'{batch} x {n}^2, kappa 1e3, p 4', 'provider': 'eigh fp32', 'ms': eigh,
             'rel_err': f'{err(x_eigh):.2e}'},
        ]  # fmt: skip
    return rows


def suite_embedding(ctx: Ctx) -> list[dict]:
    from kernels import chunked_embedding as ce

    rows_per_chunk, dim, batch = (256, 128, 64) if ctx.dry else (1_048_576, 128, 32_768)
    g = torch.Generator(device=ctx.device).manual_seed(0)
    chunks = [
        (torch.rand(rows_per_chunk, dim, device=ctx.device, generator=g) / 2048).requires_grad_()
        for _ in range(4)
    ]
    idx = torch.randint(0, 4 * rows_per_chunk, (batch, 26), device=ctx.device, generator=g)
    idx[:, 0] = 7  # a hot id: one feature's most frequent value hit by every example
    w = torch.randn(batch, 26, dim, device=ctx.device, generator=g)
    real_use_triton = ce._use_triton
    results = {}
    for provider in ('triton', 'per_chunk_torch', 'concat'):
        if provider == 'triton' and ctx.dry:
            os.environ['TRITON_INTERPRET'] = '1'
            ce._use_triton = lambda chunks: True
        elif provider == 'per_chunk_torch':
            os.environ.pop('TRITON_INTERPRET', None)
            ce._use_triton = lambda chunks: False
        else:
            ce._use_triton = real_use_triton

        def step():
            for c in chunks:
                c.grad = None
            if provider == 'concat':
                out = ce.chunked_embedding_reference(idx, chunks)
            else:
                out = ce.chunked_embedding(idx, chunks)
            (out * w).sum().backward()

        try:
            results[provider] = ctx.time_ms(step, warmup_ms=100, rep_ms=500)
        finally:
            ce._use_triton = real_use_triton
            if ctx.dry:
                os.environ.pop('TRITON_INTERPRET', None)
    base = results['triton']
    case = f'4 x {rows_per_chunk} x {dim}, batch {batch} x 26, fwd+bwd'
    return [
        {'case': case, 'provider': p, 'ms': ms,
         **({'vs_peer': round(results['concat'] / ms, 2)} if p == 'triton' else {}),
         **({'note': 'triton in the interpreter'} if ctx.dry and p == 'triton' else {})}
        for p, ms in results.items()
    ] + [{'case': case, 'provider': 'triton vs per_chunk', 'vs_peer':
          round(results['per_chunk_torch'] / base, 2)}]  # fmt: skip


def suite_lm_loss_head(ctx: Ctx) -> list[dict]:
    try:
        from kernels import fused_linear_cross_entropy as flce
    except ImportError:
        return [{'case': 'lm head', 'provider': 'skipped', 'note': 'module not present'}]
    n, d, vocab = (64, 32, 500) if ctx.dry else (16 * 1024, 1024, 50_257)
    dtype = torch.float32 if ctx.dry else torch.bfloat16
    g = torch.Generator(device=ctx.device).manual_seed(0)
    h = torch.randn(n, d, device=ctx.device, generator=g, dtype=dtype).requires_grad_()
    wt = (torch.randn(vocab, d, device=ctx.device, generator=g, dtype=dtype) / 32).requires_grad_()
    t = torch.randint(0, vocab, (n,), device=ctx.device, generator=g)
    out = {}
    for name, fn in (('fused', flce.fused_linear_cross_entropy),
                     ('reference', flce.fused_linear_cross_entropy_reference)):  # fmt: skip
        def step(fn=fn):
            h.grad = wt.grad = None
            fn(h, wt, t).sum().backward()

        out[name] = ctx.time_ms(step)
    mem = None
    if not ctx.dry:
        torch.cuda.reset_peak_memory_stats()
        flce.fused_linear_cross_entropy(h, wt, t).sum().backward()
        mem = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    case = f'N {n}, D {d}, V {vocab}, {str(dtype).split(".")[-1]}, fwd+bwd'
    return [
        {'case': case, 'provider': 'fused', 'ms': out['fused'],
         'vs_peer': round(out['reference'] / out['fused'], 2), 'peak_gib': mem},
        {'case': case, 'provider': 'reference', 'ms': out['reference']},
    ]  # fmt: skip


def suite_lm_train_step(ctx: Ctx) -> list[dict]:
    # The pytest suite's own step, sizes and loss checks, loaded by path: `workloads` on
    # sys.path is the repository's package, not benchmarks/workloads.
    import importlib.util

    path = os.path.join(ROOT, 'benchmarks', 'workloads', 'bench_finewebedu_lm_step.py')
    spec = importlib.util.spec_from_file_location('bench_finewebedu_lm_step', path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # Its dataclasses look their module up while defined.
    spec.loader.exec_module(bench)
    return bench.gpu_suite_rows(
        ctx.device, ctx.dry, lambda fn: ctx.time_ms(fn, warmup_ms=200, rep_ms=1000)
    )


SUITES = {
    'copy_bandwidth': suite_copy_bandwidth,
    'fused_updates': suite_fused_updates,
    'cuda_graph': suite_cuda_graph,
    'shampoo_roots': suite_shampoo_roots,
    'embedding': suite_embedding,
    'lm_loss_head': suite_lm_loss_head,
    'lm_train_step': suite_lm_train_step,
}
COLUMNS = ('suite', 'case', 'provider', 'ms', 'pct_copy_bw', 'vs_peer', 'rel_err', 'gbps',
           'peak_gib', 'note', 'error')  # fmt: skip


def markdown(rows: list[dict], steps: list[dict], env: dict, dry: bool) -> str:
    lines = [f'# gpu_check {"(dry run: CPU, numbers meaningless)" if dry else ""}', '']
    lines.append(f'GPU: {env.get("gpu_name", "none")}; torch {env.get("torch_version")}, '
                 f'triton {env.get("triton_version")}, CUDA {env.get("cuda_runtime")}, '
                 f'driver {env.get("cuda_driver")}; commit {env.get("git_sha")} '
                 f'(dirty: {env.get("git_dirty")})')  # fmt: skip
    lines.append('')
    if steps:
        lines += ['| step | status | seconds |', '| --- | --- | --- |']
        lines += [f'| {s["step"]} | {s["status"]} | {s.get("seconds", "")} |' for s in steps]
        lines.append('')
    cols = [c for c in COLUMNS if any(c in r and r[c] is not None for r in rows)]
    lines += ['| ' + ' | '.join(cols) + ' |', '|' + ' --- |' * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, '')
            cells.append(f'{v:.4g}' if isinstance(v, float) else ('' if v is None else str(v)))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', required=True, help='directory for results.json / results.md')
    parser.add_argument('--steps-file', help='JSON lines of earlier steps (build, tests)')
    parser.add_argument('--dry-run', action='store_true', help='CPU smoke run, tiny sizes')
    parser.add_argument('--suites', default=','.join(SUITES), help='comma-separated subset')
    args = parser.parse_args(argv)
    names = [s for s in args.suites.split(',') if s]
    unknown = [s for s in names if s not in SUITES]
    if unknown:
        print(f'run_suites.py: --suites: unknown {unknown}; known: {list(SUITES)}', file=sys.stderr)
        return 2
    if not args.dry_run and not torch.cuda.is_available():
        print('run_suites.py: no CUDA device; use --dry-run for the CPU smoke mode', file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    from _harness import environment_info

    env = environment_info()
    steps = []
    if args.steps_file and os.path.exists(args.steps_file):
        with open(args.steps_file) as f:
            steps = [json.loads(line) for line in f if line.strip()]
    ctx = Ctx(args.dry_run)
    rows = []
    for name in names:
        start = time.perf_counter()
        try:
            suite_rows = SUITES[name](ctx)
        except Exception as error:  # noqa: BLE001 - record it, run the next suite
            traceback.print_exc()
            suite_rows = [{'case': '-', 'provider': '-', 'error': f'{type(error).__name__}: {error}'[:300]}]
        for r in suite_rows:
            r['suite'] = name
        rows += suite_rows
        print(f'{name}: {len(suite_rows)} rows in {time.perf_counter() - start:.1f} s', flush=True)
        if not ctx.dry:
            torch.cuda.empty_cache()
    result = {'dry_run': args.dry_run, 'environment': env, 'steps': steps, 'rows': rows,
              'copy_gbps': ctx.copy_gbps}  # fmt: skip
    with open(os.path.join(args.out, 'results.json'), 'w') as f:
        json.dump(result, f, indent=1, default=str)
    table = markdown(rows, steps, env, args.dry_run)
    with open(os.path.join(args.out, 'results.md'), 'w') as f:
        f.write(table)
    print(table)
    return 0


if __name__ == '__main__':
    sys.exit(main())
