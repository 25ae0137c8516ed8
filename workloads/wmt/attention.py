"""WMT Transformer building blocks: boolean masks, the two attention paths, positional encoding.

Split out of `models.py` (whose docstring describes the masks and the two paths); names are
re-exported there, so `models.make_src_mask` etc. keep working.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DROPOUT_RATE = 0.1
MAX_LEN = 256  # Positional-encoding table length (upstream's default).
_MASK_VALUE = -1e10  # Upstream's additive mask value.

_ACTIVATIONS = {'relu': F.relu, 'tanh': torch.tanh}


# ---- masks -------------------------------------------------------------------------------------
def make_causal_mask(x: Tensor) -> Tensor:
    """[B, L] -> [B, L, L] bool, True where key position <= query position."""
    idxs = torch.arange(x.shape[-1], device=x.device)
    return (idxs[:, None] >= idxs[None, :]).expand(*x.shape, x.shape[-1])


def make_src_mask(src: Tensor, inputs_segmentation: Tensor | None) -> Tensor:
    """Encoder self-attention mask, [B, 1, L, L] bool (upstream's before its float flip)."""
    valid = src > 0
    mask = valid[:, :, None] & valid[:, None, :]
    if inputs_segmentation is not None:
        mask = mask & (inputs_segmentation[:, :, None] == inputs_segmentation[:, None, :])
    return mask[:, None]


def make_tgt_and_memory_mask(
    tgt: Tensor,
    src: Tensor,
    inputs_segmentation: Tensor | None,
    targets_segmentation: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Decoder self-attention ([B, 1, Lt, Lt]) and cross-attention ([B, 1, Lt, Ls]) masks.

    `tgt` is the unshifted target (upstream builds the masks before shifting). As
    upstream, segment masks apply when `inputs_segmentation` is given.
    """
    valid_t, valid_s = tgt > 0, src > 0
    tgt_mask = valid_t[:, :, None] & valid_t[:, None, :] & make_causal_mask(tgt)
    memory_mask = valid_t[:, :, None] & valid_s[:, None, :]
    if inputs_segmentation is not None:
        tgt_mask = tgt_mask & (targets_segmentation[:, :, None] == targets_segmentation[:, None, :])
        memory_mask = memory_mask & (
            targets_segmentation[:, :, None] == inputs_segmentation[:, None, :]
        )
    return tgt_mask[:, None], memory_mask[:, None]


def shift_right(x: Tensor) -> Tensor:
    """[B, L] -> [B, L]: a 0 prepended, the last position dropped."""
    return F.pad(x, (1, 0))[:, :-1]


# ---- attention ---------------------------------------------------------------------------------
def attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    dropout_rate: float,
    training: bool,
    temperature: float = 1.0,
) -> Tensor:
    """Upstream's attention: float mask per head, softmax((temp q) kᵀ / sqrt(d) + mask) v.

    q: [B, H, Lq, d]; k, v: [B, H, Lk, d]; mask: bool [B, 1, Lq, Lk] (True: allowed) or None.
    """
    scores = torch.matmul(temperature * q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        per_head = mask.expand(-1, q.shape[1], -1, -1)  # Materialised per head, as upstream.
        float_mask = torch.zeros(per_head.shape, dtype=q.dtype, device=q.device)
        float_mask.masked_fill_(~per_head, _MASK_VALUE)
        scores = scores + float_mask
    probs = F.dropout(F.softmax(scores, dim=-1), dropout_rate, training)
    return torch.matmul(probs, v)


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    dropout_rate: float,
    training: bool,
    temperature: float,
    use_sdpa: bool,
) -> Tensor:
    """`attention_reference`, or the same math through `F.scaled_dot_product_attention`."""
    if not use_sdpa:
        return attention_reference(q, k, v, mask, dropout_rate, training, temperature)
    if mask is not None:
        mask = mask | ~mask.any(dim=-1, keepdim=True)  # No empty rows (see module doc).
    return F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=mask,
        dropout_p=dropout_rate if training else 0.0,
        scale=temperature / math.sqrt(q.shape[-1]),
    )


class MultiheadAttention(nn.Module):
    """Upstream's attention block: fused `in_proj` (self) or `q_proj` + `kv_proj` (cross),
    `out_proj`; no biases by default; queries scaled by `attention_temp`."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        self_attn: bool = True,
        attention_temp: float = 1.0,
        bias: bool = False,
        use_sdpa: bool = True,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError('embed_dim must be divisible by num_heads.')
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.self_attn = self_attn
        self.head_dim = embed_dim // num_heads
        self.attention_temp = attention_temp
        self.use_sdpa = use_sdpa
        if self_attn:
            self.in_proj = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        else:
            self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
            self.kv_proj = nn.Linear(embed_dim, 2 * embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.normal_(module.bias, std=1e-6)

    def _heads(self, x: Tensor) -> Tensor:
        """[B, L, D] -> [B, H, L, d]."""
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of `x` ([B, L, D]; memory for cross-attention), each [B, H, L, d]."""
        if self.self_attn:
            _, k, v = self.in_proj(x).split(self.embed_dim, dim=2)
        else:
            k, v = self.kv_proj(x).split(self.embed_dim, dim=2)
        return self._heads(k), self._heads(v)

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_rate: float
    ) -> Tensor:
        """Heads q [B, H, Lq, d] over k, v -> [B, Lq, D] after `out_proj`."""
        out = attention(
            q, k, v, mask, dropout_rate, self.training, self.attention_temp, self.use_sdpa
        )
        bsz, _, tgt_len, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(bsz, tgt_len, self.embed_dim))

    def forward(
        self,
        x: Tensor,
        mem: Tensor | None = None,
        attn_mask: Tensor | None = None,
        dropout_rate: float = 0.0,
    ) -> Tensor:
        """x: [B, Lq, D] queries (and keys/values for self-attention); mem: [B, Lk, D]
        memory for cross-attention; attn_mask: bool [B, 1, Lq, Lk]."""
        if self.self_attn:
            q, k, v = (self._heads(t) for t in self.in_proj(x).split(self.embed_dim, dim=2))
        else:
            q = self._heads(self.q_proj(x))
            k, v = self.project_kv(mem)
        return self.attend(q, k, v, attn_mask, dropout_rate)


# ---- layers ------------------------------------------------------------------------------------
def _activation(activation: str | Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    if callable(activation):
        return activation
    if activation not in _ACTIVATIONS:
        raise ValueError(f'Unknown activation function {activation}.')
    return _ACTIVATIONS[activation]


class PositionalEncoding(nn.Module):
    """Fixed sinusoidal table [1, max_len, d] (sin in the first half, cos in the second)."""

    def __init__(self, d_model: int, max_len: int = MAX_LEN) -> None:
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        scale_factor = -math.log(10000.0) / (d_model // 2 - 1)
        div_term = torch.exp(torch.arange(d_model // 2) * scale_factor)
        pe = torch.zeros(1, max_len, d_model)
        pe[0, :, : d_model // 2] = torch.sin(position * div_term)
        pe[0, :, d_model // 2 : 2 * (d_model // 2)] = torch.cos(position * div_term)
        self.register_buffer('pe', pe)

    def forward(
        self, x: Tensor, positions: Tensor | int | None = None, dropout_rate: float = 0.0
    ) -> Tensor:
        """x [B, L, D] plus the encoding of `positions` ([B, L] packed positions, an int for
        one decoding step, or None for 0..L-1), then dropout."""
        if positions is None:
            pe = self.pe[:, : x.shape[1]]
        else:
            pe = self.pe[0, positions]
        return F.dropout(x + pe, dropout_rate, self.training)
