"""FineWeb-Edu decoder-only LM as upstream AlgoPerf v1.0 builds it in PyTorch.

The math of `finewebedu_lm_pytorch/models.py` (MLC 4c37f2aa, "based on the plainLM
codebase"; `../shared/reference/algoperf_v1.md` §1.2), re-implemented:

- token embedding, no positional embedding; 12 pre-LN blocks
  `x = x + attn(attn_norm(x)); x = x + mlp(mlp_norm(x))`; `out_norm`; `lm_head` tied to
  the embedding (`lm_head.weight is embed_tokens.weight`, tied after init so the shared
  matrix keeps the embedding's draw). Every norm is `nn.RMSNorm(eps=1e-6)` with a weight.
- attention: fused `w_qkv` (bias-free), 8 heads of 128; RoPE (theta 500,000) on ADJACENT
  pairs (x[2i], x[2i+1]) computed in fp32 and cast back to the input dtype; then the
  QK-norm exactly as upstream's PyTorch writes it, `q / ||q|| + eps` (operator precedence:
  (x / ||x||) + 1e-6 elementwise, not x / (||x|| + eps) as the JAX model); then
  `q * attn_scale` (a learnable fp32 scalar per layer, init log2(L^2 - L) = 19.99859 at
  L = 1024); causal attention with scale 1.0.
- MLP: `fc2(GLU(fc1(x)))` with `nn.GLU` = a * sigmoid(b), a the first half (a sigmoid
  GLU, not SwiGLU); hidden 4096 (rounded up to a multiple of 256). No dropout anywhere.
- init: every Linear and the Embedding N(0, 0.02), then `fc2.weight` and `w_out.weight`
  re-drawn N(0, 0.02 / sqrt(2 * n_layers)) = N(0, 0.0040825); norms 1. The modules are
  registered and initialised in upstream's order, so `torch.manual_seed(s)` followed by
  `Transformer(LmConfig())` on the CPU draws upstream's initial weights (tested against a
  port written in the test).

Parameter names are upstream's (`embed_tokens.weight`, `layers.N.attn.{w_qkv,w_out}.weight`,
`layers.N.attn.attn_scale`, `layers.N.{attn_norm,mlp_norm}.weight`,
`layers.N.mlp.{fc1,fc2}.weight`, `out_norm.weight`), which give upstream's parameter types
through `algoperf.param_utils`. 252,815,372 parameters (the tied matrix counted once).

Layouts: activations are (B, L, d_model). q, k, v leave `w_qkv` as (B, L, H, Dh) views
(unit last stride, rows strided by 3 d_model); RoPE and the fused RoPE + QK-norm kernel
take q, k in (B, L, H, Dh) (the kernel copies to contiguous where it needs to), with
cos/sin of shape (L, Dh/2) fp32 and `attn_scale` the 0-d fp32 parameter, and return
(B, L, H, Dh); they are then transposed to (B, H, L, Dh) for attention. Upstream applies RoPE before the
transpose and the norm after it; the norm is over Dh either way.

Speed techniques (`LmSpeed`, kept out of the math; each off runs the plain code):
- `rms_norm_kernel`: `kernels.rms_norm.rms_norm(x, weight, eps)` instead of `nn.RMSNorm`'s.
- `rope_qk_norm_kernel`: `kernels.rope_qk_norm.rope_qk_norm(q, k, cos, sin, attn_scale,
  eps) -> (q, k)`: RoPE, QK-norm and the scale in one pass.
- `sdpa`: `F.scaled_dot_product_attention(is_causal=True, scale=1.0)` (upstream's call;
  flash attention where the device and dtype allow) instead of the explicit
  softmax(q k^T + causal mask) v reference.
- `fused_loss_head`: read by the workload's `model_loss_fn`: the model returns the final
  hidden states (`forward(tokens, return_hidden=True)`) and `head_losses` computes the
  per-token cross entropy through `kernels.fused_linear_cross_entropy` without
  materialising the [B, L, 50257] logits.
The kernels dispatch to Triton on CUDA and to a torch reference elsewhere. A kernel module
that is not installed falls back to the plain path (`Transformer.fast_paths()` says which
are active).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclasses.dataclass(frozen=True)
class LmSpeed:
    """Switches for the speed techniques (see the module docstring); all math-neutral."""

    rms_norm_kernel: bool = True
    rope_qk_norm_kernel: bool = True
    sdpa: bool = True
    fused_loss_head: bool = True

    @classmethod
    def upstream(cls) -> LmSpeed:
        """Upstream's code path: plain norms and RoPE, SDPA, the full logits."""
        return cls(
            rms_norm_kernel=False, rope_qk_norm_kernel=False, sdpa=True, fused_loss_head=False
        )

    @classmethod
    def reference(cls) -> LmSpeed:
        """Every op in plain PyTorch, attention as explicit softmax (the parity reference)."""
        return cls(
            rms_norm_kernel=False, rope_qk_norm_kernel=False, sdpa=False, fused_loss_head=False
        )


@dataclasses.dataclass(frozen=True)
class LmConfig:
    """Model hyperparameters; defaults are upstream's `BaseLmWorkload` constants.

    Attributes:
      vocab_size, seq_len, d_model, n_heads, n_layers: as named (seq_len sets the RoPE
        table and the `attn_scale` init; longer inputs get a table computed on the fly).
      mlp_dim: upstream's `expanded_model_dim`; the GLU hidden width is it rounded up to
        a multiple of `multiple_of`.
      rmsnorm_eps, qknorm_eps: the norms' epsilons.
      rope_theta: RoPE base.
      init_std: std of the Linear/Embedding init (residual outputs: / sqrt(2 n_layers)).
      tie_embeddings: `lm_head.weight is embed_tokens.weight`.
      speed: the speed techniques.
    """

    vocab_size: int = 50_257
    seq_len: int = 1_024
    d_model: int = 1_024
    n_heads: int = 8
    n_layers: int = 12
    mlp_dim: int = 4_096
    multiple_of: int = 256
    rmsnorm_eps: float = 1e-6
    qknorm_eps: float = 1e-6
    rope_theta: float = 500_000.0
    init_std: float = 0.02
    tie_embeddings: bool = True
    speed: LmSpeed = dataclasses.field(default_factory=LmSpeed)

    def __post_init__(self) -> None:
        for name in ('vocab_size', 'd_model', 'n_heads', 'n_layers', 'mlp_dim', 'multiple_of'):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(
                    f'LmConfig.{name}: must be a positive integer, got {getattr(self, name)!r}'
                )
        if not isinstance(self.seq_len, int) or self.seq_len < 2:
            raise ValueError(f'LmConfig.seq_len: must be an integer >= 2, got {self.seq_len!r}')
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f'LmConfig.n_heads: d_model {self.d_model} must split into {self.n_heads} heads '
                'of an even width (RoPE rotates pairs)'
            )
        for name in ('rmsnorm_eps', 'qknorm_eps', 'rope_theta', 'init_std'):
            if not getattr(self, name) > 0:
                raise ValueError(f'LmConfig.{name}: must be positive, got {getattr(self, name)!r}')

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def hidden_dim(self) -> int:
        return self.multiple_of * math.ceil(self.mlp_dim / self.multiple_of)


def _kernel(module: str, name: str) -> Callable | None:
    """`kernels.<module>.<name>`, or None when that module is not installed (plain path).

    Only the module itself being absent counts as "not installed"; any other import error
    is a bug and propagates.
    """
    full = f'kernels.{module}'
    try:
        mod = importlib.import_module(full)
    except ModuleNotFoundError as e:
        if e.name in (full, 'kernels'):
            return None
        raise
    return getattr(mod, name, None)


# ---- RoPE -------------------------------------------------------------------------------------
def rope_tables(head_dim: int, length: int, theta: float) -> tuple[Tensor, Tensor]:
    """(cos, sin), each (length, head_dim / 2) fp32 on the CPU: angle t * theta^(-2i / Dh)."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device='cpu') / head_dim)
    )
    angles = torch.outer(torch.arange(length, dtype=torch.float32, device='cpu'), inv_freq)
    return torch.cos(angles), torch.sin(angles)


def rotate_adjacent_pairs(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """RoPE on (B, L, H, Dh): each pair (x[2i], x[2i+1]) rotated by angle[t, i], in fp32,
    cast back to x's dtype (as upstream's complex-like rotation)."""
    pairs = x.unflatten(-1, (-1, 2)).float()
    even, odd = pairs[..., 0], pairs[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    rotated = torch.stack([even * c - odd * s, odd * c + even * s], dim=-1).flatten(-2)
    return rotated.type_as(x)


def qk_normalize(x: Tensor, eps: float) -> Tensor:
    """Upstream PyTorch's QK-norm: (x / ||x||) + eps over the last dim (sic: eps is added
    after the division; the JAX model divides by ||x|| + eps)."""
    return x / torch.norm(x, dim=-1, keepdim=True) + eps


def causal_attention_reference(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T (scale 1) + causal mask) v on (B, H, L, Dh); the SDPA reference."""
    length = q.shape[-2]
    scores = q @ k.transpose(-2, -1)
    allowed = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~allowed, float('-inf'))
    return torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v


# ---- modules ----------------------------------------------------------------------------------
class RMSNorm(nn.RMSNorm):
    """`nn.RMSNorm` (weight, eps), optionally through `kernels.rms_norm.rms_norm`."""

    def __init__(self, dim: int, eps: float, use_kernel: bool) -> None:
        super().__init__(dim, eps=eps)
        self._kernel = _kernel('rms_norm', 'rms_norm') if use_kernel else None

    def forward(self, x: Tensor) -> Tensor:
        if self._kernel is None:
            return super().forward(x)
        return self._kernel(x, self.weight, self.eps)


class Attention(nn.Module):
    """Causal self-attention with RoPE, upstream's QK-norm and a learnable logit scale."""

    def __init__(self, cfg: LmConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim, self.eps = cfg.n_heads, cfg.head_dim, cfg.qknorm_eps
        self.w_qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.w_out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        # Upstream draws q, k and v blocks separately here (and again in the model-wide
        # init); the draws are kept so a seed gives upstream's weights.
        for block in torch.chunk(self.w_qkv.weight, 3, dim=0):
            nn.init.normal_(block, std=cfg.init_std)
        nn.init.normal_(self.w_out.weight, std=cfg.init_std)
        # Henry et al. (2020): logits = attn_scale * cos-sim; log2(1024^2 - 1024) = 19.99859.
        self.attn_scale = nn.Parameter(torch.tensor(math.log2(cfg.seq_len**2 - cfg.seq_len)))
        self._rope_qk_norm = (
            _kernel('rope_qk_norm', 'rope_qk_norm') if cfg.speed.rope_qk_norm_kernel else None
        )
        self._sdpa = cfg.speed.sdpa

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        b, length, d = x.shape
        heads = (b, length, self.n_heads, self.head_dim)
        q, k, v = (t.view(heads) for t in self.w_qkv(x).split(d, dim=2))  # (B, L, H, Dh)
        if self._rope_qk_norm is not None:
            extra = {}
            if x.is_cuda and torch.is_autocast_enabled('cuda'):
                # Upstream's q, k are fp32 here (CUDA autocast's fp32 norm) and SDPA casts
                # them to bf16; the kernel writes that bf16 rounding directly (same values,
                # half the bytes).
                extra['out_dtype'] = torch.get_autocast_dtype('cuda')
            q, k = self._rope_qk_norm(q, k, cos, sin, self.attn_scale, self.eps, **extra)
            q, k = q.transpose(1, 2), k.transpose(1, 2)
        else:
            q = rotate_adjacent_pairs(q, cos, sin).transpose(1, 2)  # (B, H, L, Dh)
            k = rotate_adjacent_pairs(k, cos, sin).transpose(1, 2)
            q = qk_normalize(q, self.eps) * self.attn_scale
            k = qk_normalize(k, self.eps)
        v = v.transpose(1, 2)
        if self._sdpa:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0)
        else:
            out = causal_attention_reference(q, k, v)
        return self.w_out(out.transpose(1, 2).reshape(b, length, d))


class MLP(nn.Module):
    """fc2(a * sigmoid(b)) with (a, b) = fc1(x) split in halves."""

    def __init__(self, cfg: LmConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.d_model, 2 * cfg.hidden_dim, bias=False)
        self.fc2 = nn.Linear(cfg.hidden_dim, cfg.d_model, bias=False)
        self.glu = nn.GLU(dim=2)
        nn.init.normal_(self.fc1.weight, std=cfg.init_std)  # Upstream's draws, kept (see above).
        nn.init.normal_(self.fc2.weight, std=cfg.init_std)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.glu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN block; attribute order is upstream's (it fixes the init draws' order)."""

    def __init__(self, cfg: LmConfig) -> None:
        super().__init__()
        self.attn = Attention(cfg)
        self.attn_norm = RMSNorm(cfg.d_model, cfg.rmsnorm_eps, cfg.speed.rms_norm_kernel)
        self.mlp = MLP(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.rmsnorm_eps, cfg.speed.rms_norm_kernel)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    """The decoder-only LM; `forward(tokens)` -> logits [B, L, vocab] (params' dtype, or
    autocast's), `forward(tokens, return_hidden=True)` -> the final normed hidden states."""

    def __init__(self, cfg: LmConfig | None = None) -> None:
        super().__init__()
        cfg = LmConfig() if cfg is None else cfg
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.out_norm = RMSNorm(cfg.d_model, cfg.rmsnorm_eps, cfg.speed.rms_norm_kernel)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        cos, sin = rope_tables(cfg.head_dim, cfg.seq_len, cfg.rope_theta)
        self.register_buffer('rope_cos', cos, persistent=False)  # Not in upstream's state_dict.
        self.register_buffer('rope_sin', sin, persistent=False)
        self.apply(self._init_weights)  # Children first, in registration order (upstream's).
        residual_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
        for name, p in self.named_parameters():
            if name.endswith(('fc2.weight', 'w_out.weight')):
                nn.init.normal_(p, mean=0.0, std=residual_std)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=self.cfg.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=self.cfg.init_std)

    def _rope(self, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
        if length <= self.rope_cos.shape[0]:
            return self.rope_cos[:length], self.rope_sin[:length]
        cos, sin = rope_tables(
            self.cfg.head_dim, length, self.cfg.rope_theta
        )  # As upstream: longer inputs work.
        return cos.to(device), sin.to(device)

    def forward(self, tokens: Tensor, return_hidden: bool = False) -> Tensor:
        x = self.embed_tokens(tokens)
        cos, sin = self._rope(x.shape[1], x.device)
        for layer in self.layers:
            x = layer(x, cos, sin)
        hidden = self.out_norm(x)
        return hidden if return_hidden else self.lm_head(hidden)

    def fast_paths(self) -> dict[str, bool]:
        """Which speed techniques this instance actually runs (a missing kernel module
        turns its switch into the plain path)."""
        attn = self.layers[0].attn
        return {
            'rms_norm_kernel': self.out_norm._kernel is not None,
            'rope_qk_norm_kernel': attn._rope_qk_norm is not None,
            'sdpa': attn._sdpa,
            'fused_loss_head': self.cfg.speed.fused_loss_head and _fused_head_kernel() is not None,
        }


# ---- loss head --------------------------------------------------------------------------------
def _fused_head_kernel() -> Callable | None:
    return _kernel('fused_linear_cross_entropy', 'fused_linear_cross_entropy')


def head_losses_reference(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    label_smoothing: float,
    weights: Tensor | None = None,
) -> Tensor:
    """Per-token CE [B, L] of `hidden @ weight^T`, times `weights` if given: upstream's
    lm_head + loss_fn math (full logits, `F.cross_entropy(reduction='none')`; under
    autocast the logits are bf16 and the cross entropy fp32, as upstream)."""
    logits = F.linear(hidden, weight)
    per_token = F.cross_entropy(
        logits.view(-1, logits.shape[-1]),
        targets.reshape(-1),
        reduction='none',
        label_smoothing=label_smoothing,
    ).view(targets.shape)
    return per_token if weights is None else per_token * weights


def head_losses(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    label_smoothing: float,
    fused: bool,
    weights: Tensor | None = None,
) -> Tensor:
    """Per-token CE [B, L] of the tied head times `weights`: through
    `kernels.fused_linear_cross_entropy` (chunked, no full logits; the matmuls in the
    autocast dtype, the softmax in fp32, as upstream's autocast does) when `fused` and
    installed, else `head_losses_reference`.

    The weights go into the kernel rather than being applied after it: the upstream
    gradient of its output is then uniform (loss = sum / count), which is the kernel's
    fast backward (no recomputation of the logits).
    """
    kernel = _fused_head_kernel() if fused else None
    if kernel is None:
        return head_losses_reference(hidden, weight, targets, label_smoothing, weights)
    return kernel(hidden, weight, targets, weights, label_smoothing=label_smoothing)
