"""Shampoo with grafting, as Distributed Shampoo ran in the AlgoPerf v0.5 winning entry.

Per parameter with gradient g at step t (the order of facebookresearch/optimizers'
DistributedShampoo ``_per_group_step_impl``, the version of the AlgoPerf entry):

    g      <- g + wd p                          (only with use_decoupled_weight_decay=False)
    L_i    <- b2 L_i + (1 - b2) contract_i(G G)  per block G and index i (b2 = 1: AdaGrad sum)
    v      <- graft_b2 v + (1 - graft_b2) g^2   (Adam grafting; AdaGrad: v += g^2)
    every precondition_frequency steps from start_preconditioning_step:
    R_i    <- (L_i / (1 - b2^t) + eps I)^(-1/p_i)   (kernels.matrix_root; p_i = 2k by default)
    m      <- b1 m + (1 - b1) g;  m' = b1 m + (1 - b1) g if use_nadam else m;  m' /= 1 - b1^t
    graft  =  m' / (sqrt(v / (1 - graft_b2^t)) + graft_eps)        (Adam grafting)
    d      =  graft                                   before start_preconditioning_step
    d_G    =  S_G ||graft_G|| / (||S_G|| + 1e-12), S_G = R_1 m'_G R_2   per block, after it
    d      <- d + wd p                                 (decoupled weight decay)
    u      <- mu u + d;  d = d + mu u (Nesterov) or u  (momentum mu > 0)
    p      <- p - lr d

Parameters of order < 2 after merging dimensions (biases, norms) and parameters with a
dimension >= ``large_dim_threshold`` (Criteo's embedding table; the entry used a second,
never-preconditioning instance for them) take the grafting update alone.

Fast paths: every parameter whose update is exactly AdamW/NAdamW this step (grafting-only,
or before start_preconditioning_step; Adam grafting, no momentum) is updated by one fused
multi-tensor call (``kernels.fused_optim.adam_``). The roots of all factors of one size are
computed as one batch (``kernels.matrix_root.matrix_inverse_root``: eigh on CPU, batched
Newton in Triton on CUDA with eigh as the fallback; ``root_method='warm'`` reuses each
factor's previous eigenvectors when it can certify the result, and backs off after a
rejection).
With ``distribute_roots=True`` under torch.distributed, each rank computes its share of the
roots (balanced by n^3) and ``shampoo_distributed.all_gather_roots`` shares them, so the
root cost per step falls with the number of ranks. A root that comes out non-finite is
discarded and the previous one kept (Distributed Shampoo's behaviour).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from kernels import fused_optim
from kernels.matrix_root import RootStats, matrix_inverse_root
from submissions.optimizers import shampoo_blocks as blocks
from submissions.optimizers.fused import KeepsStateDtype
from submissions.optimizers.shampoo_distributed import all_gather_roots, assign_owners

_GRAFTING = ('adam', 'adagrad', 'sgd', 'none')
_SHAMPOO_EPS = 1e-12  # DistributedShampoo's EPSILON_DEFAULT in the grafting norm ratio


class Shampoo(KeepsStateDtype):
    """Blocked Shampoo with grafting, momentum/Nesterov and decoupled weight decay.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        betas: (b1 for the filtered gradient, b2 for the Kronecker factors; 1.0 = AdaGrad).
        epsilon: added to each factor before its root.
        momentum: heavy-ball momentum on the search direction (0 disables).
        weight_decay: decoupled (AdamW-style) unless use_decoupled_weight_decay=False.
        max_preconditioner_dim: largest factor size; larger dimensions are blocked.
        precondition_frequency: steps between root recomputations.
        start_preconditioning_step: first step using Shampoo's direction; -1 means
            precondition_frequency, math.inf never (grafting alone, for tests and tables).
        inv_root_override: root order p for every factor when > 0 (the entry used 0 and 2).
        exponent_multiplier: multiplies the exponent 1/p.
        grafting: 'adam', 'adagrad', 'sgd' or 'none'.
        grafting_beta2, grafting_epsilon: the grafting method's second-moment decay and eps.
        use_nadam: Nesterov look-ahead on the filtered gradient (as NAdamW).
        use_nesterov: Nesterov form of the heavy-ball momentum.
        use_bias_correction: bias-correct the filtered gradient, factors and grafting state.
        use_decoupled_weight_decay: AdamW-style decay (else L2 added to the gradient).
        precondition_1d: also precondition order-1 parameters with a full matrix.
        large_dim_threshold: parameters with a dimension >= this take grafting alone.
        root_method: 'auto', 'eigh', 'newton' or 'warm' (kernels.matrix_root).
        root_rtol: accuracy the warm root path must certify.
        distribute_roots: split root computations over the ranks of ``process_group``.
        process_group: the group for distribute_roots (None: the default group).
    """

    def __init__(
        self, params, lr=1e-2, betas=(0.9, 1.0), epsilon=1e-12, momentum=0.0, weight_decay=0.0,
        max_preconditioner_dim=1024, precondition_frequency=1, start_preconditioning_step=-1,
        inv_root_override=0, exponent_multiplier=1.0, grafting='adam', grafting_beta2=0.999,
        grafting_epsilon=1e-8, use_nadam=False, use_nesterov=False, use_bias_correction=True,
        use_decoupled_weight_decay=True, precondition_1d=False, large_dim_threshold=1_000_000,
        root_method='auto', root_rtol=1e-4, distribute_roots=False, process_group=None,
    ):  # fmt: skip
        if start_preconditioning_step == -1:
            start_preconditioning_step = precondition_frequency
        checks = {
            'lr': lr >= 0, 'betas[0]': 0 <= betas[0] < 1, 'betas[1]': 0 < betas[1] <= 1, 'epsilon': epsilon > 0,
            'momentum': 0 <= momentum < 1, 'weight_decay': weight_decay >= 0,
            'max_preconditioner_dim': max_preconditioner_dim >= 1, 'precondition_frequency': precondition_frequency >= 1,
            'start_preconditioning_step': start_preconditioning_step >= precondition_frequency,
            'inv_root_override': inv_root_override >= 0, 'exponent_multiplier': exponent_multiplier > 0,
            'grafting': grafting in _GRAFTING,
            # Adam grafting with beta2 = 1 never accumulates g^2 (v stays 0): use 'adagrad'.
            'grafting_beta2': 0 < grafting_beta2 < 1 or (grafting != 'adam' and grafting_beta2 == 1),
            'grafting_epsilon': grafting_epsilon > 0,
        }  # fmt: skip
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f'Invalid Shampoo hyperparameter(s): {", ".join(bad)} (got betas={betas}, '
                f'start_preconditioning_step={start_preconditioning_step}, grafting={grafting!r})'
            )
        defaults = dict(
            lr=lr, betas=tuple(betas), epsilon=epsilon, momentum=momentum, weight_decay=weight_decay,
            max_preconditioner_dim=max_preconditioner_dim, precondition_frequency=precondition_frequency,
            start_preconditioning_step=start_preconditioning_step, inv_root_override=inv_root_override,
            exponent_multiplier=exponent_multiplier, grafting=grafting, grafting_beta2=grafting_beta2,
            grafting_epsilon=grafting_epsilon, use_nadam=use_nadam, use_nesterov=use_nesterov,
            use_bias_correction=use_bias_correction, use_decoupled_weight_decay=use_decoupled_weight_decay,
            precondition_1d=precondition_1d, large_dim_threshold=large_dim_threshold, root_method=root_method,
            root_rtol=root_rtol,
        )  # fmt: skip
        super().__init__(params, defaults)
        self._distribute = distribute_roots
        self._process_group = process_group
        self._plans: dict[torch.Tensor, blocks.BlockPlan] = {}
        self._warm_skip: dict[tuple, int] = {}  # heuristic, not checkpointed: see _root_batches
        self.root_stats = RootStats()
        self.root_failures = 0

    # ---- state -------------------------------------------------------------------------

    def _plan(self, p: torch.Tensor, group: dict) -> blocks.BlockPlan:
        plan = self._plans.get(p)
        if plan is None:
            plan = blocks.plan_blocks(
                tuple(p.shape),
                group['max_preconditioner_dim'],
                group['large_dim_threshold'],
                group['precondition_1d'],
            )
            self._plans[p] = plan
        return plan

    def _init_state(self, p: torch.Tensor, group: dict, plan: blocks.BlockPlan) -> dict:
        state = self.state[p]
        if state:
            return state
        wide = torch.float64 if p.dtype == torch.float64 else torch.float32
        state['step'] = torch.tensor(0.0)
        state['exp_avg'] = torch.zeros_like(p, dtype=wide, memory_format=torch.preserve_format)
        if group['grafting'] in ('adam', 'adagrad'):
            state['exp_avg_sq'] = torch.zeros_like(
                p, dtype=wide, memory_format=torch.preserve_format
            )
        if group['momentum'] != 0:
            state['momentum_buffer'] = torch.zeros_like(
                p, dtype=wide, memory_format=torch.preserve_format
            )
        if plan.preconditioned:
            shapes = plan.block_shapes()
            state['factors'] = [
                [torch.zeros(d, d, dtype=wide, device=p.device) for d in s] for s in shapes
            ]
            state['roots'] = [
                [torch.eye(d, dtype=wide, device=p.device) for d in s] for s in shapes
            ]
            state['eigvecs'] = [[None for _ in s] for s in shapes]
        return state

    # ---- step --------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._group_step(group)
        return loss

    def _group_step(self, group: dict) -> None:
        b1, b2 = group['betas']
        start, freq = group['start_preconditioning_step'], group['precondition_frequency']
        fused_ok = (
            group['grafting'] == 'adam'
            and group['momentum'] == 0
            and group['use_bias_correction']
            and (group['use_decoupled_weight_decay'] or group['weight_decay'] == 0)
        )
        fused: dict[tuple[int, torch.device], list[list[torch.Tensor]]] = {}
        generic, due = [], []
        for p in group['params']:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError('Shampoo does not support sparse gradients')
            plan = self._plan(p, group)
            state = self._init_state(p, group, plan)
            state['step'] += 1
            t = int(state['step'].item())
            g = p.grad
            if group['weight_decay'] != 0 and not group['use_decoupled_weight_decay']:
                g = g.add(p, alpha=group['weight_decay'])
            if plan.preconditioned:
                self._update_factors(p, g, state, plan, b2)
                if (t % freq == 0 and t > start) or t == start:
                    due.append(p)
            shampoo_now = plan.preconditioned and t >= start
            if fused_ok and not shampoo_now:
                lists = fused.setdefault((t, p.device), [[], [], [], []])
                for lst, x in zip(lists, (p, g, state['exp_avg'], state['exp_avg_sq'])):
                    lst.append(x)
            else:
                generic.append((p, g, t, shampoo_now))
        if due:
            self._compute_roots(due, group)
        for (t, _), (ps, gs, ms, vs) in fused.items():
            fused_optim.adam_(
                ps,
                gs,
                ms,
                vs,
                step=t,
                lr=group['lr'],
                beta1=b1,
                beta2=group['grafting_beta2'],
                eps=group['grafting_epsilon'],
                weight_decay=group['weight_decay'],
                nesterov=group['use_nadam'],
            )
        for p, g, t, shampoo_now in generic:
            self._generic_update(p, g, t, shampoo_now, group)

    def _update_factors(self, p, g, state, plan, b2) -> None:
        G = g.to(state['factors'][0][0].dtype).reshape(plan.merged_shape)
        for block, factors in zip(plan.blocks, state['factors']):
            Gb = G[block]
            for i, F in enumerate(factors):
                outer = blocks.factor_contraction(Gb, i)
                if b2 == 1.0:
                    F.add_(outer)
                else:
                    F.mul_(b2).add_(outer, alpha=1 - b2)

    def _generic_update(self, p, g, t, shampoo_now, group) -> None:
        state = self.state[p]
        b1 = group['betas'][0]
        wide = state['exp_avg'].dtype
        g = g.to(wide)
        graft_b2, graft = group['grafting_beta2'], group['grafting']
        if graft == 'adam':
            state['exp_avg_sq'].mul_(graft_b2).addcmul_(g, g, value=1 - graft_b2)
        elif graft == 'adagrad':
            state['exp_avg_sq'].addcmul_(g, g)
        if b1 != 0:
            m = state['exp_avg'].lerp_(g, 1 - b1)
            if group['use_nadam']:
                m = m.mul(b1).add_(g, alpha=1 - b1)
            if group['use_bias_correction']:
                m = m / (1 - b1**t)
        else:
            m = g

        def grafted(x, v):
            if graft == 'adam':
                bc = 1 - graft_b2**t if group['use_bias_correction'] else 1.0
                return x / ((v / bc).sqrt_().add_(group['grafting_epsilon']))
            if graft == 'adagrad':
                return x / v.sqrt().add_(group['grafting_epsilon'])
            return x

        v = state.get('exp_avg_sq')
        if not shampoo_now:
            d = grafted(m, v)
        else:
            plan = self._plans[p]
            M = m.reshape(plan.merged_shape)
            V = v.reshape(plan.merged_shape) if v is not None else None
            D = torch.empty_like(M)
            for block, roots in zip(plan.blocks, state['roots']):
                S = blocks.precondition(M[block], roots)
                if graft != 'none':
                    ref = grafted(M[block], V[block] if V is not None else None)
                    S = S * (
                        torch.linalg.vector_norm(ref) / (torch.linalg.vector_norm(S) + _SHAMPOO_EPS)
                    )
                D[block] = S
            d = D.reshape(p.shape)
        if group['weight_decay'] != 0 and group['use_decoupled_weight_decay']:
            d = d.add(p.to(wide), alpha=group['weight_decay'])
        mu = group['momentum']
        if mu != 0:
            buf = state['momentum_buffer'].mul_(mu).add_(d)
            d = d.add(buf, alpha=mu) if group['use_nesterov'] else buf
        p.add_(d.to(p.dtype), alpha=-group['lr'])

    # ---- roots -------------------------------------------------------------------------

    def _compute_roots(self, due: list[torch.Tensor], group: dict) -> None:
        """Recomputes the roots of every factor of the parameters in ``due``, batched by size."""
        b2 = group['betas'][1]
        items = []  # (param, block index, dim index, root order)
        for p in due:
            plan = self._plans[p]
            for bi, shape in enumerate(plan.block_shapes()):
                p_root = blocks.root_order(
                    len(shape), group['exponent_multiplier'], group['inv_root_override']
                )
                items.extend((p, bi, di, p_root) for di in range(len(shape)))
        sizes = [self.state[p]['factors'][bi][di].shape[0] for p, bi, di, _ in items]
        distributed = self._distribute and dist.is_available() and dist.is_initialized()
        world = dist.get_world_size(self._process_group) if distributed else 1
        rank = dist.get_rank(self._process_group) if distributed else 0
        owners = assign_owners(sizes, world)
        mine = [i for i, r in enumerate(owners) if r == rank]
        results = self._root_batches([items[i] for i in mine], group, b2)
        computed = dict(zip(mine, results))
        if world > 1:
            templates = [self.state[p]['roots'][bi][di] for p, bi, di, _ in items]
            computed = all_gather_roots(computed, owners, templates, self._process_group)
        for i, (p, bi, di, _) in enumerate(items):
            root = computed[i]
            if bool(torch.isfinite(root).all()):
                self.state[p]['roots'][bi][di].copy_(root)
            else:
                self.root_failures += 1

    def _root_batches(self, items: list, group: dict, b2: float) -> list[torch.Tensor]:
        """Roots of the given factors, one ``matrix_inverse_root`` call per (size, order, warm)."""
        out: list[torch.Tensor | None] = [None] * len(items)
        batches: dict[tuple, list[int]] = {}
        for k, (p, bi, di, p_root) in enumerate(items):
            state = self.state[p]
            n = state['factors'][bi][di].shape[0]
            key = (id(p), bi, di)
            warm = state['eigvecs'][bi][di] is not None and self._warm_skip.get(key, 0) == 0
            if not warm and self._warm_skip.get(key, 0) > 0:
                self._warm_skip[key] -= 1
            batches.setdefault((n, p_root, warm, state['factors'][bi][di].device), []).append(k)
        for (n, p_root, warm, _), ks in batches.items():
            mats, vecs = [], []
            for k in ks:
                p, bi, di, _ = items[k]
                state = self.state[p]
                bc = (
                    1 - b2 ** int(state['step'].item())
                    if group['use_bias_correction'] and b2 < 1
                    else 1.0
                )
                mats.append(state['factors'][bi][di] / bc)
                if warm:
                    vecs.append(state['eigvecs'][bi][di])
            roots, Q, stats, rejected = matrix_inverse_root(
                torch.stack(mats),
                p_root,
                group['epsilon'],
                method=group['root_method'],
                eigvecs=torch.stack(vecs) if warm else None,
                rtol=group['root_rtol'],
            )
            self.root_stats.add(stats)
            for j, k in enumerate(ks):
                p, bi, di, _ = items[k]
                out[k] = roots[j]
                self.state[p]['eigvecs'][bi][di] = None if Q is None else Q[j].clone()
                if warm:
                    # A factor that moved too far for the warm path will likely move as far
                    # next time: back off 2 updates after a rejection (an eigh then costs
                    # one extra matmul, ~18% at n = 1024), retry after that.
                    self._warm_skip[(id(p), bi, di)] = 2 if bool(rejected[j]) else 0
        return out
