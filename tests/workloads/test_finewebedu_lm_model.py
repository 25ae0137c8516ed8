"""finewebedu_lm model: size, parameter types, init, a port of upstream's model, speed switches.

The port below is written in this file from the published formulas of upstream's PyTorch
model (`../shared/reference/algoperf_v1.md` §1.2), independently of `models.py`: RoPE as
complex multiplication of adjacent pairs, RMSNorm and the GLU written out, attention as an
explicit masked softmax. Its constructor draws the initial weights in upstream's order
(Linear/Embedding default inits, the q/k/v and residual draws, the model-wide N(0, 0.02),
the residual re-draw, then the tie), so a seed must give both models the same weights.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from algoperf import param_utils, spec
from tests.tolerances import tolerance
from workloads.finewebedu_lm import models

SMALL = {
    'vocab_size': 257,
    'seq_len': 32,
    'd_model': 64,
    'n_heads': 4,
    'n_layers': 2,
    'mlp_dim': 96,
    'multiple_of': 32,
}
REFERENCE = models.LmSpeed.reference()


def _config(speed=REFERENCE, **overrides) -> models.LmConfig:
    return models.LmConfig(**{**SMALL, 'speed': speed, **overrides})


# ---- the port ------------------------------------------------------------------------------------
class PortRMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class PortAttention(nn.Module):
    def __init__(self, d, heads, seq_len, eps, qk_norm='upstream_torch'):
        super().__init__()
        self.heads, self.eps, self.qk_norm = heads, eps, qk_norm
        self.w_qkv = nn.Linear(d, 3 * d, bias=False)
        self.w_out = nn.Linear(d, d, bias=False)
        for w in torch.chunk(self.w_qkv.weight, 3, dim=0):
            nn.init.normal_(w, std=0.02)
        nn.init.normal_(self.w_out.weight, std=0.02)
        self.attn_scale = nn.Parameter(torch.tensor(math.log2(seq_len**2 - seq_len)))

    def _norm(self, x):
        if self.qk_norm == 'upstream_torch':  # (x / ||x||) + eps
            return x / torch.norm(x, dim=-1, keepdim=True) + self.eps
        return x / (torch.norm(x, dim=-1, keepdim=True) + self.eps)  # The JAX model's.

    def forward(self, x, rotation):
        b, t, d = x.shape
        q, k, v = self.w_qkv(x).chunk(3, dim=-1)
        q, k, v = (y.reshape(b, t, self.heads, d // self.heads) for y in (q, k, v))
        q, k = (rotation(y) for y in (q, k))
        q, k, v = (y.permute(0, 2, 1, 3) for y in (q, k, v))
        q = self._norm(q) * self.attn_scale
        k = self._norm(k)
        scores = torch.einsum('bhqd,bhkd->bhqk', q, k)
        scores = scores + torch.full((t, t), float('-inf')).triu(1)
        out = torch.einsum('bhqk,bhkd->bhqd', scores.softmax(-1), v)
        return self.w_out(out.permute(0, 2, 1, 3).reshape(b, t, d))


class PortMLP(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.fc1 = nn.Linear(d, 2 * hidden, bias=False)
        self.fc2 = nn.Linear(hidden, d, bias=False)
        nn.init.normal_(self.fc1.weight, std=0.02)
        nn.init.normal_(self.fc2.weight, std=0.02)

    def forward(self, x):
        a, gate = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(a * torch.sigmoid(gate))


class PortBlock(nn.Module):
    def __init__(self, c, qk_norm):
        super().__init__()
        self.attn = PortAttention(c.d_model, c.n_heads, c.seq_len, c.qknorm_eps, qk_norm)
        self.attn_norm = PortRMSNorm(c.d_model, c.rmsnorm_eps)
        self.mlp = PortMLP(c.d_model, c.multiple_of * math.ceil(c.mlp_dim / c.multiple_of))
        self.mlp_norm = PortRMSNorm(c.d_model, c.rmsnorm_eps)

    def forward(self, x, rotation):
        x = x + self.attn(self.attn_norm(x), rotation)
        return x + self.mlp(self.mlp_norm(x))


class PortLM(nn.Module):
    """Upstream's model from its formulas; `rope='adjacent'` (upstream) or 'half' (the
    GPT-NeoX layout, a wrong port), `qk_norm='upstream_torch'` or 'jax'."""

    def __init__(self, c, rope='adjacent', qk_norm='upstream_torch'):
        super().__init__()
        self.c, self.rope = c, rope
        self.embed_tokens = nn.Embedding(c.vocab_size, c.d_model)
        self.layers = nn.ModuleList(PortBlock(c, qk_norm) for _ in range(c.n_layers))
        self.out_norm = PortRMSNorm(c.d_model, c.rmsnorm_eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.apply(self._init)  # Post-order (children first), as upstream's `self.apply`.
        for name, p in self.named_parameters():
            if name.endswith(('fc2.weight', 'w_out.weight')):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * c.n_layers))
        self.lm_head.weight = self.embed_tokens.weight

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def rotation(self, x):
        """RoPE on (B, T, H, Dh) with angle t * theta^(-2i / Dh) for pair i, in fp64 here."""
        b, t, h, dh = x.shape
        i = torch.arange(dh // 2, dtype=torch.float64)
        angle = torch.arange(t, dtype=torch.float64)[:, None] * self.c.rope_theta ** (-2 * i / dh)
        rot = torch.polar(torch.ones_like(angle), angle)[None, :, None, :]
        if self.rope == 'adjacent':
            z = torch.view_as_complex(x.double().reshape(b, t, h, dh // 2, 2).contiguous())
            return torch.view_as_real(z * rot).reshape(b, t, h, dh).to(x.dtype)
        z = torch.complex(x[..., : dh // 2].double(), x[..., dh // 2 :].double()) * rot
        return torch.cat([z.real, z.imag], dim=-1).to(x.dtype)

    def forward(self, tokens):
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x, self.rotation)
        return self.lm_head(self.out_norm(x))


def _perturbed(model: nn.Module, seed: int = 5) -> nn.Module:
    """Non-trivial norm weights and attention scales (init would hide a missing weight)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('norm.weight'):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith('attn_scale'):
                p.fill_(float(2 + 8 * torch.rand((), generator=g)))
    return model


def _tokens(c, batch=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, c.vocab_size, (batch, c.seq_len + 1), generator=g)
    return tokens[:, :-1], tokens[:, 1:]


def _rel(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max())


# ---- size and parameter types --------------------------------------------------------------------
def test_full_model_has_upstreams_parameter_count_with_the_tie_counted_once():
    with torch.device('meta'):
        model = models.Transformer(models.LmConfig())
    assert sum(p.numel() for p in model.parameters()) == 252_815_372
    assert model.lm_head.weight is model.embed_tokens.weight
    non_embedding = sum(
        p.numel() for n, p in model.named_parameters() if n != 'embed_tokens.weight'
    )
    assert non_embedding == 201_352_204


def test_parameter_names_give_upstreams_types():
    with torch.device('meta'):
        model = models.Transformer(models.LmConfig())
    shapes = param_utils.pytorch_param_shapes(model)
    t = spec.ParameterType
    expected = {'embed_tokens.weight': t.EMBEDDING, 'out_norm.weight': t.LAYER_NORM_SCALE}
    for i in range(12):
        expected.update({
            f'layers.{i}.attn.w_qkv.weight': t.ATTENTION_QKV,
            f'layers.{i}.attn.w_out.weight': t.ATTENTION_OUT,
            f'layers.{i}.attn.attn_scale': t.WEIGHT,
            f'layers.{i}.attn_norm.weight': t.LAYER_NORM_SCALE,
            f'layers.{i}.mlp.fc1.weight': t.WEIGHT,
            f'layers.{i}.mlp.fc2.weight': t.WEIGHT,
            f'layers.{i}.mlp_norm.weight': t.LAYER_NORM_SCALE,
        })  # fmt: skip
    assert param_utils.pytorch_param_types(shapes) == expected
    # The scored runs' names (torch.compile + DDP prefixes; SA's Muon split) type alike.
    prefixed = {f'_orig_mod.module.{k}': v for k, v in shapes.items()}
    types = param_utils.pytorch_param_types(prefixed)
    assert {k.removeprefix('_orig_mod.module.'): v for k, v in types.items()} == expected
    assert shapes['layers.0.attn.w_qkv.weight'].shape_tuple == (3072, 1024)
    assert shapes['layers.0.mlp.fc1.weight'].shape_tuple == (8192, 1024)
    assert shapes['layers.0.mlp.fc2.weight'].shape_tuple == (1024, 4096)


def test_config_rejects_bad_fields_naming_them():
    with pytest.raises(ValueError, match='LmConfig.n_heads'):
        models.LmConfig(d_model=64, n_heads=3)
    with pytest.raises(ValueError, match='LmConfig.n_heads'):
        models.LmConfig(d_model=12, n_heads=4)  # Head width 3 is odd: RoPE needs pairs.
    with pytest.raises(ValueError, match='LmConfig.vocab_size'):
        models.LmConfig(vocab_size=0)
    with pytest.raises(ValueError, match='LmConfig.qknorm_eps'):
        models.LmConfig(qknorm_eps=0.0)


# ---- init ----------------------------------------------------------------------------------------
def test_init_statistics_per_parameter_group():
    # 12 layers (the residual std depends on it), L = 1024 (attn_scale), narrower and a
    # smaller vocabulary so that the CPU init is quick; >= 65k draws per group.
    cfg = models.LmConfig(vocab_size=2048, d_model=256, n_heads=2, mlp_dim=512, speed=REFERENCE)
    torch.manual_seed(0)
    model = models.Transformer(cfg)
    groups = {'embedding': [], 'linear': [], 'residual': []}
    for name, p in model.named_parameters():
        if name.endswith('norm.weight'):
            assert torch.equal(p, torch.ones_like(p)), name
        elif name.endswith('attn_scale'):
            assert p.dtype == torch.float32 and p.shape == ()
            assert p.item() == pytest.approx(math.log2(1024**2 - 1024), rel=1e-7)
            assert p.item() == pytest.approx(19.99859, abs=5e-6)
        elif name.endswith(('fc2.weight', 'w_out.weight')):
            groups['residual'].append(p.detach().flatten())
        elif name == 'embed_tokens.weight':
            groups['embedding'].append(p.detach().flatten())
        else:
            groups['linear'].append(p.detach().flatten())
    stds = {k: torch.cat(v).std().item() for k, v in groups.items()}
    means = {k: torch.cat(v).mean().item() for k, v in groups.items()}
    assert stds['embedding'] == pytest.approx(0.02, rel=0.02)
    assert stds['linear'] == pytest.approx(0.02, rel=0.02)
    assert stds['residual'] == pytest.approx(0.02 / math.sqrt(24), rel=0.02)
    assert 0.02 / math.sqrt(24) == pytest.approx(0.0040825, rel=1e-4)
    assert all(abs(m) < 1e-4 for m in means.values())
    assert model.lm_head.weight is model.embed_tokens.weight  # Tied: the embedding's draw.
    assert 'lm_head.weight' not in dict(model.named_parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_a_seed_draws_upstreams_initial_weights():
    cfg = _config()
    torch.manual_seed(7)
    ours = models.Transformer(cfg)
    torch.manual_seed(7)
    port = PortLM(cfg)
    theirs = dict(port.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p, theirs[name], **tolerance('bitwise', torch.float32), msg=name)
    assert ours.state_dict().keys() == port.state_dict().keys()


# ---- forward against the port --------------------------------------------------------------------
@pytest.mark.parametrize(
    'speed',
    [REFERENCE, models.LmSpeed.upstream(), models.LmSpeed()],
    ids=['reference', 'upstream', 'fast'],
)
def test_logits_loss_and_grads_match_the_upstream_port(speed):
    # A visible QK-norm epsilon (upstream: 1e-6) so that its precedence moves the logits.
    cfg = _config(speed=speed, qknorm_eps=0.05)
    torch.manual_seed(3)
    ours = _perturbed(models.Transformer(cfg))
    port = PortLM(cfg)
    port.load_state_dict(ours.state_dict())
    inputs, targets = _tokens(cfg)
    logits, expected = ours(inputs), port(inputs)
    # fp32, the port in another op order (and fp64 RoPE): measured 3e-7 of the largest logit.
    assert _rel(logits, expected) <= 1e-5
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), label_smoothing=0.1)
    loss_port = F.cross_entropy(expected.flatten(0, 1), targets.flatten(), label_smoothing=0.1)
    assert loss.item() == pytest.approx(loss_port.item(), rel=1e-5)
    loss.backward()
    loss_port.backward()
    grads = {n: p.grad for n, p in port.named_parameters()}
    for name, p in ours.named_parameters():
        # Gradients sum ~1e3 fp32 products in other orders: measured <= 2e-5 of the max.
        assert _rel(p.grad, grads[name]) <= 1e-4, name


@pytest.mark.parametrize(
    'wrong', [{'qk_norm': 'jax'}, {'rope': 'half'}], ids=['jax_qk_norm', 'half_split_rope']
)
def test_the_port_comparison_detects_qk_norm_precedence_and_rope_pairing(wrong):
    cfg = _config(qknorm_eps=0.05)
    torch.manual_seed(3)
    ours = _perturbed(models.Transformer(cfg))
    port = PortLM(cfg, **wrong)
    port.load_state_dict(ours.state_dict())
    inputs, _ = _tokens(cfg)
    assert _rel(ours(inputs), port(inputs)) > 1e-2


def test_the_qk_norm_adds_eps_after_dividing():
    x = torch.tensor([[3.0, 4.0]])
    torch.testing.assert_close(models.qk_normalize(x, 0.5), torch.tensor([[1.1, 1.3]]))


def test_rope_rotates_adjacent_pairs_in_fp32_and_casts_back():
    cos, sin = models.rope_tables(4, 3, theta=10.0)
    x = torch.tensor([1.0, 0.0, 0.0, 1.0]).repeat(1, 3, 1, 1).to(torch.bfloat16)  # (1, 3, 1, 4)
    y = models.rotate_adjacent_pairs(x, cos, sin)
    assert y.dtype == torch.bfloat16
    t = torch.arange(3.0)
    angles = (t[:, None] * torch.tensor([1.0, 10.0**-0.5])).T  # Pair i: t * 10^(-2i/4).
    expected = torch.stack(
        [angles[0].cos(), angles[0].sin(), -angles[1].sin(), angles[1].cos()], -1
    )
    torch.testing.assert_close(y[0, :, 0].float(), expected, rtol=2**-8, atol=2**-9)


def test_longer_inputs_get_rope_tables_on_the_fly():
    cfg = _config()
    torch.manual_seed(0)
    model = models.Transformer(cfg)
    long = torch.randint(0, cfg.vocab_size, (1, 2 * cfg.seq_len))
    out = model(long)
    assert out.shape == (1, 2 * cfg.seq_len, cfg.vocab_size)
    torch.testing.assert_close(
        out[:, : cfg.seq_len], model(long[:, : cfg.seq_len]), rtol=1e-5, atol=1e-5
    )


def test_return_hidden_gives_the_states_the_head_reads():
    cfg = _config()
    torch.manual_seed(0)
    model = models.Transformer(cfg)
    inputs, _ = _tokens(cfg)
    hidden = model(inputs, return_hidden=True)
    assert hidden.shape == (3, cfg.seq_len, cfg.d_model)
    torch.testing.assert_close(
        model.lm_head(hidden), model(inputs), **tolerance('bitwise', torch.float32)
    )


# ---- speed switches ------------------------------------------------------------------------------
_KERNEL_MODULES = {
    'rms_norm_kernel': 'kernels.rms_norm',
    'rope_qk_norm_kernel': 'kernels.rope_qk_norm',
    'fused_loss_head': 'kernels.fused_linear_cross_entropy',
}


def _loss_and_grads(model, inputs, targets, fused_head, weights=None):
    hidden = model(inputs, return_hidden=True)
    per_token = models.head_losses(
        hidden, model.lm_head.weight, targets, 0.1, fused=fused_head, weights=weights
    )
    loss = per_token.sum() / targets.numel()
    model.zero_grad()
    loss.backward()
    return per_token.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    'switch', ['rms_norm_kernel', 'rope_qk_norm_kernel', 'sdpa', 'fused_loss_head']
)
def test_each_speed_switch_keeps_values_and_gradients(switch):
    if switch in _KERNEL_MODULES:
        pytest.importorskip(_KERNEL_MODULES[switch])
    fast_speed = models.LmSpeed(
        **{**{k: False for k in _KERNEL_MODULES}, 'sdpa': False, switch: True}
    )
    cfg = _config()
    torch.manual_seed(4)
    plain = _perturbed(models.Transformer(cfg))
    fast = models.Transformer(_config(speed=fast_speed))
    fast.load_state_dict(plain.state_dict())
    assert fast.fast_paths()[switch] and not any(plain.fast_paths().values())
    inputs, targets = _tokens(cfg, batch=2)
    weights = (torch.rand(targets.shape, generator=torch.Generator().manual_seed(2)) < 0.8).float()
    loss_plain, grads_plain = _loss_and_grads(plain, inputs, targets, False, weights)
    loss_fast, grads_fast = _loss_and_grads(
        fast, inputs, targets, switch == 'fused_loss_head', weights
    )
    # fp32 on both paths, the same formulas in other op orders. Measured on CPU: losses
    # <= 1.7e-7 relative, gradients <= 1.4e-6 of their max (SDPA vs explicit softmax).
    torch.testing.assert_close(loss_fast, loss_plain, rtol=1e-5, atol=1e-6)
    for name, g in grads_plain.items():
        assert _rel(grads_fast[name], g) <= 1e-4, name


def test_a_missing_kernel_module_falls_back_to_the_plain_path(monkeypatch):
    real = models._kernel
    monkeypatch.setattr(
        models, '_kernel', lambda module, name: None if module == 'rms_norm' else real(module, name)
    )
    model = models.Transformer(_config(speed=models.LmSpeed()))
    assert not model.fast_paths()['rms_norm_kernel'] and model.fast_paths()['sdpa']
    assert models._kernel('no_such_kernel_module', 'f') is None
