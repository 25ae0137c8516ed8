"""ViT (no class token, sin-cos position embedding) as upstream AlgoPerf v0.6 builds it.

Faithful to `algoperf/workloads/imagenet_vit/imagenet_pytorch/models.py`: module and
parameter names (so the parameter-type tree matches upstream's: `self_attention1.{query,
key,value,out}` are typed attention Q/K/V/out, `layer_norm*`/`encoder_norm` layer norms,
`conv_patch_extract` a conv), registration order (`pre_logits` first), the order of RNG
draws at construction (so a seed gives upstream's initial weights) and the init:
Xavier-uniform attention weights with zero bias, Xavier-uniform MLP weights with
N(0, 1e-6) bias, truncated LeCun-normal patch conv and pre-logits, zero head. Dropout
(rate given at forward time) on the embedded patches, the attention probabilities, the
MLP hidden layer and both residual branches. The MAP head's attention is upstream's
WMT `MultiheadAttention(self_attn=False, bias=True)` (`q_proj`, `kv_proj`, `out_proj`,
scaled-dot-product attention).

Attention has two paths with the same math: `attention_reference` (upstream's explicit
softmax(q kᵀ / sqrt(d)) v) and `F.scaled_dot_product_attention` (flash /
memory-efficient kernels on GPU), picked per model by `use_sdpa`. With dropout > 0 in
training the two draw different dropout masks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from algoperf import init_utils

DROPOUT_RATE = 0.0


def decode_variant(variant: str) -> dict:
    """'S/16' -> the model size (upstream's table, from arXiv:2106.04560 Table 2)."""
    size, patch = variant.split('/')
    width, depth, mlp_dim, num_heads = {
        'Ti': (192, 12, 768, 3),
        'S': (384, 12, 1536, 6),
        'M': (512, 12, 2048, 8),
        'B': (768, 12, 3072, 12),
        'L': (1024, 24, 4096, 16),
        'H': (1280, 32, 5120, 16),
        'g': (1408, 40, 6144, 16),
        'G': (1664, 48, 8192, 16),
    }[size]
    return {
        'width': width,
        'depth': depth,
        'mlp_dim': mlp_dim,
        'num_heads': num_heads,
        'patch_size': (int(patch), int(patch)),
    }


def posemb_sincos_2d(patches: Tensor, temperature: float = 10_000.0) -> Tensor:
    """[1, h*w, width] fixed 2-D sin-cos embedding of an [n, width, h, w] patch grid (MoCo v3)."""
    _, width, h, w = patches.shape
    if width % 4 != 0:
        raise ValueError('Width must be mult of 4 for sincos posemb.')
    device = patches.device
    y, x = torch.meshgrid(
        torch.arange(h, device=device), torch.arange(w, device=device), indexing='ij'
    )
    omega = torch.arange(width // 4, device=device) / (width // 4 - 1)
    omega = 1.0 / (temperature**omega)
    y = y.flatten()[:, None] * omega[None, :]
    x = x.flatten()[:, None] * omega[None, :]
    return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1)[None, :, :]


def attention_reference(
    q: Tensor, k: Tensor, v: Tensor, dropout_rate: float, training: bool
) -> Tensor:
    """Upstream's attention: softmax(q kᵀ / sqrt(d)) with dropout on the probabilities, times v.

    q, k, v: [B, heads, L, d] -> [B, heads, L, d].
    """
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    probs = F.dropout(F.softmax(scores, dim=-1), dropout_rate, training)
    return torch.matmul(probs, v)


def attention(
    q: Tensor, k: Tensor, v: Tensor, dropout_rate: float, training: bool, use_sdpa: bool
) -> Tensor:
    """`attention_reference`, or the same math through `F.scaled_dot_product_attention`."""
    if use_sdpa:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_rate if training else 0.0)
    return attention_reference(q, k, v, dropout_rate, training)


class MlpBlock(nn.Module):
    """Linear -> GELU(tanh) [-> x * Linear(x) (GLU)] -> dropout -> Linear."""

    def __init__(self, width: int, mlp_dim: int | None = None, use_glu: bool = False) -> None:
        super().__init__()
        self.width = width
        self.mlp_dim = mlp_dim or 4 * width
        self.use_glu = use_glu
        self.linear1 = nn.Linear(self.width, self.mlp_dim)
        self.act_fnc = nn.GELU(approximate='tanh')
        self.glu_linear = nn.Linear(self.mlp_dim, self.mlp_dim) if use_glu else None
        self.linear2 = nn.Linear(self.mlp_dim, self.width)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.normal_(module.bias, std=1e-6)

    def forward(self, x: Tensor, dropout_rate: float) -> Tensor:
        x = self.act_fnc(self.linear1(x))
        if self.use_glu:
            x = x * self.glu_linear(x)
        x = F.dropout(x, dropout_rate, training=self.training)
        return self.linear2(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate query/key/value/out projections."""

    def __init__(self, width: int, num_heads: int = 8, use_sdpa: bool = False) -> None:
        super().__init__()
        if width % num_heads != 0:
            raise ValueError('Memory dimension must be divisible by number of heads.')
        self.width = width
        self.num_heads = num_heads
        self.head_dim = width // num_heads
        self.use_sdpa = use_sdpa
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.constant_(module.bias, 0.0)

    def _heads(self, x: Tensor) -> Tensor:
        """[B, L, width] -> [B, heads, L, head_dim]."""
        return x.view(*x.shape[:-1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, dropout_rate: float) -> Tensor:
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        context = attention(q, k, v, dropout_rate, self.training, self.use_sdpa)
        context = context.transpose(1, 2).reshape(*x.shape[:-1], self.width)
        return self.out(context)


class Encoder1DBlock(nn.Module):
    """Pre-LN (or post-LN) transformer block: attention then MLP, each residual."""

    def __init__(
        self,
        width: int,
        mlp_dim: int | None = None,
        num_heads: int = 12,
        use_glu: bool = False,
        use_post_layer_norm: bool = False,
        use_sdpa: bool = False,
    ) -> None:
        super().__init__()
        self.use_post_layer_norm = use_post_layer_norm
        self.layer_norm0 = nn.LayerNorm(width, eps=1e-6)
        self.self_attention1 = SelfAttention(width, num_heads, use_sdpa)
        self.layer_norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp3 = MlpBlock(width=width, mlp_dim=mlp_dim, use_glu=use_glu)

    def forward(self, x: Tensor, dropout_rate: float) -> Tensor:
        drop = lambda y: F.dropout(y, dropout_rate, training=self.training)
        if not self.use_post_layer_norm:
            x = x + drop(self.self_attention1(self.layer_norm0(x), dropout_rate))
            return x + drop(self.mlp3(self.layer_norm2(x), dropout_rate))
        x = self.layer_norm0(x + drop(self.self_attention1(x, dropout_rate)))
        return self.layer_norm2(x + drop(self.mlp3(x, dropout_rate)))


class Encoder(nn.Module):
    """`depth` blocks, then a final LayerNorm (pre-LN only)."""

    def __init__(
        self,
        depth: int,
        width: int,
        mlp_dim: int | None = None,
        num_heads: int = 12,
        use_glu: bool = False,
        use_post_layer_norm: bool = False,
        use_sdpa: bool = False,
    ) -> None:
        super().__init__()
        self.use_post_layer_norm = use_post_layer_norm
        self.net = nn.ModuleList([
            Encoder1DBlock(width, mlp_dim, num_heads, use_glu, use_post_layer_norm, use_sdpa)
            for _ in range(depth)
        ])  # fmt: skip
        self.encoder_norm = None if use_post_layer_norm else nn.LayerNorm(width, eps=1e-6)

    def forward(self, x: Tensor, dropout_rate: float) -> Tensor:
        for block in self.net:
            x = block(x, dropout_rate)
        return x if self.encoder_norm is None else self.encoder_norm(x)


class MultiheadAttention(nn.Module):
    """Upstream WMT `MultiheadAttention(self_attn=False, bias=True)`: cross-attention of
    queries `x` over memory `mem`, Xavier-uniform weights, N(0, 1e-6) biases, SDPA."""

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError('embed_dim must be divisible by num_heads.')
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.kv_proj = nn.Linear(embed_dim, 2 * embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.normal_(module.bias, std=1e-6)

    def forward(self, x: Tensor, mem: Tensor, dropout_rate: float = 0.0) -> Tensor:
        bsz, tgt_len, _ = x.shape
        heads = lambda t: t.view(bsz, t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv_proj(mem).split(self.embed_dim, dim=2)
        out = F.scaled_dot_product_attention(
            heads(self.q_proj(x)),
            heads(k),
            heads(v),
            dropout_p=dropout_rate if self.training else 0.0,
        )
        return self.out_proj(out.transpose(1, 2).reshape(bsz, tgt_len, self.embed_dim))


class MAPHead(nn.Module):
    """Multihead attention pooling: one learned probe attends over the tokens, plus an MLP."""

    def __init__(self, width: int, mlp_dim: int | None = None, num_heads: int = 12) -> None:
        super().__init__()
        self.probe = nn.Parameter(torch.zeros((1, 1, width)))
        nn.init.xavier_uniform_(self.probe)
        self.mha = MultiheadAttention(width, num_heads)
        self.layer_norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = MlpBlock(width=width, mlp_dim=mlp_dim)

    def forward(self, x: Tensor, dropout_rate: float) -> Tensor:
        probe = self.probe.expand(x.shape[0], -1, -1)
        x = self.mha(probe, x, dropout_rate=dropout_rate)
        x = x + self.mlp(self.layer_norm(x), dropout_rate)
        return x[:, 0]


class ViT(nn.Module):
    """Vision transformer over 3 x 224 x 224 images (any size divisible by the patch works).

    Args:
      num_classes: head outputs.
      patch_size, width, depth, mlp_dim, num_heads: the model size (`decode_variant`).
      rep_size: pre-logits width (True: `width`; 0/False: no pre-logits layer).
      head_zeroinit: zero-initialise the head (else LeCun-normal).
      use_glu, use_post_layer_norm, use_map: upstream's variants.
      use_sdpa: attention through `F.scaled_dot_product_attention` (same math).
    """

    channels: int = 3

    def __init__(
        self,
        num_classes: int = 1000,
        patch_size: tuple[int, int] = (16, 16),
        width: int = 768,
        depth: int = 12,
        mlp_dim: int | None = None,
        num_heads: int = 12,
        rep_size: int | bool = True,
        head_zeroinit: bool = True,
        use_glu: bool = False,
        use_post_layer_norm: bool = False,
        use_map: bool = False,
        use_sdpa: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.rep_size = rep_size
        self.use_map = use_map
        # Registration (and RNG draw) order as upstream: pre_logits first.
        if rep_size:
            self.pre_logits = nn.Linear(width, width if rep_size is True else rep_size)
        self.conv_patch_extract = nn.Conv2d(
            self.channels, width, patch_size, stride=patch_size, padding='valid'
        )
        self.encoder = Encoder(
            depth, width, mlp_dim, num_heads, use_glu, use_post_layer_norm, use_sdpa
        )
        if num_classes:
            self.head = nn.Linear(width, num_classes)
        self.map = MAPHead(width, mlp_dim, num_heads) if use_map else None

        init_utils.pytorch_default_init(self.conv_patch_extract)
        if rep_size:
            init_utils.pytorch_default_init(self.pre_logits)
        if num_classes:
            if head_zeroinit:
                nn.init.constant_(self.head.weight, 0.0)
                nn.init.constant_(self.head.bias, 0.0)
            else:
                init_utils.pytorch_default_init(self.head)

    def set_sdpa(self, use_sdpa: bool) -> None:
        """Switch every self-attention between SDPA and the reference math."""
        for m in self.modules():
            if isinstance(m, SelfAttention):
                m.use_sdpa = use_sdpa

    def forward(self, x: Tensor, dropout_rate: float = DROPOUT_RATE) -> Tensor:
        """[B, 3, H, W] -> [B, num_classes] logits."""
        x = self.conv_patch_extract(x)
        n, c, h, w = x.shape
        # float32, as upstream (`.type(self.dtype)`), whatever the activations' dtype.
        pos = posemb_sincos_2d(x).to(torch.float32)
        x = x.reshape(n, c, h * w).transpose(1, 2) + pos  # [B, tokens, width], as JAX's ViT.
        x = F.dropout(x, dropout_rate, training=self.training)
        x = self.encoder(x, dropout_rate)
        x = self.map(x, dropout_rate) if self.use_map else x.mean(dim=1)
        if self.rep_size:
            x = torch.tanh(self.pre_logits(x))
        if self.num_classes:
            x = self.head(x)
        return x
