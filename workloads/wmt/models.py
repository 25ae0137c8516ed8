"""WMT Transformer (encoder-decoder, shared embedding) as upstream AlgoPerf v0.6 builds it.

Faithful to `algoperf/workloads/wmt/wmt_pytorch/models.py`: the module tree and its
parameter names (so the parameter-type tree and the state_dict keys match upstream's,
including the shared embedding and positional encoding registered again under
`encoder.` and `decoder.`), the registration order (so a seed draws upstream's initial
weights: N(0, 1) embedding, Xavier-uniform Linear weights, N(0, 1e-6) Linear biases,
bias-free attention projections), fused `in_proj` for self-attention, `q_proj` plus
fused `kv_proj` for cross-attention, pre-LN (with final encoder/decoder norms) or post-LN
blocks, the attention temperature (queries multiplied by it), the GLU variant
(`act(linear1(x)) * linear_glu(x)`), and dropout on the embeddings, the attention
probabilities, the FFN hidden layer and every residual branch. Logits are
`h @ Eᵀ / sqrt(d_model)`; the decoder input is the target shifted right by one
(across packed segments, as upstream's PyTorch model does).

Masks are boolean, True where attention is allowed, shaped [B, 1, Lq, Lk] (broadcast
over heads): key and query padding (token id 0), same segment for packed sequences
(`*_segmentation`), causal in the decoder. Two attention paths with the same math:

- `attention_reference`: upstream's float additive mask (-1e10 where disallowed),
  materialised per head, and explicit softmax((temp * q) kᵀ / sqrt(d) + mask) v.
- SDPA (default): `F.scaled_dot_product_attention` with the boolean mask and the
  temperature folded into `scale`. A query row with no allowed key (a padding query)
  is opened to every key so that no kernel sees an empty softmax; upstream's float
  mask makes such a row a uniform average instead. Those rows only feed padding
  positions (every real query masks padding keys), so logits at real positions and
  all gradients of a weight-masked loss are the same on both paths.

Autoregressive decoding (`Decoder.init_cache` / `decode_step`) keeps the self-attention
keys and values of the generated prefix and computes the cross-attention keys and
values once per batch (upstream recomputes them every step); same math as feeding the
whole prefix (tested).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workloads.wmt.attention import (  # noqa: F401 (re-exported: tests and callers use models.*)
    DROPOUT_RATE,
    MAX_LEN,
    MultiheadAttention,
    PositionalEncoding,
    _activation,
    attention,
    attention_reference,
    make_causal_mask,
    make_src_mask,
    make_tgt_and_memory_mask,
    shift_right,
)


class TransformerEncoderLayer(nn.Module):
    """Self-attention then FFN, each with a residual; pre-LN or post-LN."""

    def __init__(
        self,
        d_model: int = 1024,
        nhead: int = 16,
        dim_feedforward: int = 1024,
        activation: str | Callable[[Tensor], Tensor] = 'relu',
        glu: bool = False,
        layer_norm_eps: float = 1e-6,
        attention_temp: float = 1.0,
        pre_ln: bool = True,
        use_sdpa: bool = True,
    ) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(
            d_model, nhead, self_attn=True, attention_temp=attention_temp, use_sdpa=use_sdpa
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.glu = glu
        if glu:
            self.linear_glu = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.pre_ln = pre_ln
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.activation = _activation(activation)

    def _drop(self, x: Tensor, rate: float) -> Tensor:
        return F.dropout(x, rate, self.training)

    def _ff_block(self, inputs: Tensor, dropout_rate: float) -> Tensor:
        x = self.activation(self.linear1(inputs))
        if self.glu:
            x = x * self.linear_glu(inputs)
        return self._drop(self.linear2(self._drop(x, dropout_rate)), dropout_rate)

    def forward(self, src: Tensor, src_mask: Tensor | None = None, dropout_rate: float = 0.0):
        x = src

        def sa(y):
            return self._drop(self.self_attn(y, None, src_mask, dropout_rate), dropout_rate)

        if self.pre_ln:
            x = x + sa(self.norm1(x))
            return x + self._ff_block(self.norm2(x), dropout_rate)
        x = self.norm1(x + sa(x))
        return self.norm2(x + self._ff_block(x, dropout_rate))


class TransformerEncoder(nn.Module):
    """`num_layers` deep copies of one layer (as upstream: one RNG draw for all), then `norm`."""

    def __init__(self, encoder_layer: nn.Module, num_layers: int, norm: nn.Module | None = None):
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, src: Tensor, mask: Tensor | None = None, dropout_rate: float = 0.0):
        output = src
        for layer in self.layers:
            output = layer(output, src_mask=mask, dropout_rate=dropout_rate)
        return output if self.norm is None else self.norm(output)


class TransformerDecoderLayer(nn.Module):
    """Causal self-attention, cross-attention, FFN; each residual; pre-LN or post-LN.

    As upstream, `linear_glu` is Linear(dim_feedforward, dim_feedforward) applied to the
    d_model-wide input (upstream's shape; it works because d_model == dim_feedforward).
    """

    def __init__(
        self,
        d_model: int = 1024,
        nhead: int = 16,
        dim_feedforward: int = 1024,
        activation: str | Callable[[Tensor], Tensor] = 'relu',
        glu: bool = False,
        layer_norm_eps: float = 1e-6,
        pre_ln: bool = True,
        attention_temp: float = 1.0,
        use_sdpa: bool = True,
    ) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(
            d_model, nhead, self_attn=True, attention_temp=attention_temp, use_sdpa=use_sdpa
        )
        self.multihead_attn = MultiheadAttention(
            d_model, nhead, self_attn=False, attention_temp=attention_temp, use_sdpa=use_sdpa
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.glu = glu
        if glu:
            self.linear_glu = nn.Linear(dim_feedforward, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.pre_ln = pre_ln
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.activation = _activation(activation)

    _drop = TransformerEncoderLayer._drop
    _ff_block = TransformerEncoderLayer._ff_block

    def _block(self, x: Tensor, self_attn, cross_attn, dropout_rate: float) -> Tensor:
        """The residual structure, given the two attention functions of normed inputs."""
        drop = lambda y: self._drop(y, dropout_rate)
        if self.pre_ln:
            x = x + drop(self_attn(self.norm1(x)))
            x = x + drop(cross_attn(self.norm2(x)))
            return x + self._ff_block(self.norm3(x), dropout_rate)
        x = self.norm1(x + drop(self_attn(x)))
        x = self.norm2(x + drop(cross_attn(x)))
        return self.norm3(x + self._ff_block(x, dropout_rate))

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        dropout_rate: float = 0.0,
    ) -> Tensor:
        return self._block(
            tgt,
            lambda y: self.self_attn(y, attn_mask=tgt_mask, dropout_rate=dropout_rate),
            lambda y: self.multihead_attn(
                y, memory, attn_mask=memory_mask, dropout_rate=dropout_rate
            ),
            dropout_rate,
        )

    def decode_step(
        self, x: Tensor, index: int, self_kv: tuple[Tensor, Tensor], cross_kv, memory_mask: Tensor
    ) -> Tensor:
        """One position x [N, 1, D] at `index`: writes its keys/values into the `self_kv`
        buffers ([N, H, max_len, d]) and attends over positions 0..index."""
        attn, cross = self.self_attn, self.multihead_attn

        def self_attn(y):
            q, k, v = (attn._heads(t) for t in attn.in_proj(y).split(attn.embed_dim, dim=2))
            k_buf, v_buf = self_kv
            k_buf[:, :, index : index + 1] = k
            v_buf[:, :, index : index + 1] = v
            return attn.attend(q, k_buf[:, :, : index + 1], v_buf[:, :, : index + 1], None, 0.0)

        def cross_attn(y):
            return cross.attend(cross._heads(cross.q_proj(y)), *cross_kv, memory_mask, 0.0)

        return self._block(x, self_attn, cross_attn, 0.0)


class TransformerDecoder(nn.Module):
    """`num_layers` decoder layers (each drawn separately), then `norm` (pre-LN only)."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        d_hid: int,
        activation,
        glu: bool,
        layer_norm_eps: float,
        num_layers: int,
        attention_temp: float,
        pre_ln: bool,
        use_sdpa: bool = True,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList([
            TransformerDecoderLayer(
                d_model, nhead, d_hid, activation, glu, layer_norm_eps=layer_norm_eps,
                attention_temp=attention_temp, pre_ln=pre_ln, use_sdpa=use_sdpa,
            )
            for _ in range(num_layers)
        ])  # fmt: skip
        self.num_layers = num_layers
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps) if pre_ln else None

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        dropout_rate: float = 0.0,
    ) -> Tensor:
        output = tgt
        for layer in self.layers:
            output = layer(output, memory, tgt_mask, memory_mask, dropout_rate)
        return output if self.norm is None else self.norm(output)


class Encoder(nn.Module):
    """Embedding (shared) + positions + `TransformerEncoder`; `shared_embedding` and
    `pos_encoder` are attached by `Transformer`, as upstream."""

    def __init__(
        self,
        d_model: int = 1024,
        nhead: int = 16,
        d_hid: int = 1024,
        nlayers: int = 6,
        activation: str | Callable[[Tensor], Tensor] = 'relu',
        glu: bool = False,
        layer_norm_eps: float = 1e-6,
        attention_temp: float = 1.0,
        pre_ln: bool = True,
        use_sdpa: bool = True,
    ) -> None:
        super().__init__()
        self.nhead = nhead
        self.shared_embedding = None
        self.pos_encoder = None
        encoder_layer = TransformerEncoderLayer(
            d_model, nhead, d_hid, activation=activation, glu=glu,
            layer_norm_eps=layer_norm_eps, attention_temp=attention_temp, pre_ln=pre_ln,
            use_sdpa=use_sdpa,
        )  # fmt: skip
        encoder_norm = nn.LayerNorm(d_model, eps=layer_norm_eps) if pre_ln else None
        self.encoder = TransformerEncoder(encoder_layer, nlayers, encoder_norm)

    def forward(
        self,
        src: Tensor,
        inputs_positions: Tensor | None = None,
        inputs_segmentation: Tensor | None = None,
        dropout_rate: float = 0.0,
    ) -> Tensor:
        """src [B, Ls] token ids -> memory [B, Ls, D]."""
        src_mask = make_src_mask(src, inputs_segmentation)
        x = self.shared_embedding(src)
        x = self.pos_encoder(x, inputs_positions, dropout_rate=dropout_rate)
        return self.encoder(x, mask=src_mask, dropout_rate=dropout_rate)


class Decoder(nn.Module):
    """Shifted target embedding + positions + `TransformerDecoder` + tied output projection."""

    def __init__(
        self,
        d_model: int = 1024,
        nhead: int = 16,
        d_hid: int = 1024,
        nlayers: int = 6,
        activation: str | Callable[[Tensor], Tensor] = 'relu',
        glu: bool = False,
        layer_norm_eps: float = 1e-6,
        attention_temp: float = 1.0,
        pre_ln: bool = True,
        use_sdpa: bool = True,
    ) -> None:
        super().__init__()
        self.nhead = nhead
        self.shared_embedding = None
        self.pos_encoder = None
        self.decoder = TransformerDecoder(
            d_model, nhead, d_hid, activation, glu, layer_norm_eps, nlayers, attention_temp,
            pre_ln, use_sdpa,
        )  # fmt: skip

    def _logits(self, h: Tensor) -> Tensor:
        return torch.matmul(h, self.shared_embedding.weight.T) / math.sqrt(h.shape[-1])

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        src: Tensor,
        targets_positions: Tensor | None = None,
        inputs_segmentation: Tensor | None = None,
        targets_segmentation: Tensor | None = None,
        dropout_rate: float = 0.0,
    ) -> Tensor:
        """Teacher-forced logits [B, Lt, vocab] for targets `tgt` (unshifted); `src` only
        gives the memory padding mask."""
        tgt_mask, memory_mask = make_tgt_and_memory_mask(
            tgt, src, inputs_segmentation, targets_segmentation
        )
        x = self.shared_embedding(shift_right(tgt))
        x = self.pos_encoder(x, targets_positions, dropout_rate=dropout_rate)
        x = self.decoder(x, memory, tgt_mask, memory_mask, dropout_rate)
        return self._logits(x)

    # ---- autoregressive decoding (no dropout) -------------------------------------------------
    def init_cache(self, memory: Tensor, src: Tensor, max_len: int) -> dict:
        """Decoding state for memory [N, Ls, D] of source ids `src` [N, Ls]: the cross-attention
        keys/values and memory mask (fixed), empty self-attention buffers, position 0."""
        n = memory.shape[0]
        layers = self.decoder.layers
        attn = layers[0].self_attn
        shape = (n, attn.num_heads, max_len, attn.head_dim)
        return {
            'index': 0,
            'memory_mask': (src > 0)[:, None, None, :],
            'cross_kv': [layer.multihead_attn.project_kv(memory) for layer in layers],
            'self_kv': [(memory.new_zeros(shape), memory.new_zeros(shape)) for _ in layers],
        }

    def decode_step(self, ids: Tensor, cache: dict) -> tuple[Tensor, dict]:
        """ids [N, 1] (the previous token; 0 at the start) -> next-token logits [N, vocab]."""
        index = cache['index']
        x = self.shared_embedding(ids)
        x = self.pos_encoder(x, index)
        for layer, self_kv, cross_kv in zip(
            self.decoder.layers, cache['self_kv'], cache['cross_kv']
        ):
            x = layer.decode_step(x, index, self_kv, cross_kv, cache['memory_mask'])
        if self.decoder.norm is not None:
            x = self.decoder.norm(x)
        cache['index'] = index + 1
        return self._logits(x)[:, 0], cache

    @staticmethod
    def reorder_cache(cache: dict, flat_indices: Tensor) -> dict:
        """Rows `flat_indices` of the self-attention prefix (beam reordering). The memory
        terms are left alone: beam search only permutes beams of one batch item, which
        share them."""
        n = cache['index']
        for k_buf, v_buf in cache['self_kv']:
            k_buf[:, :, :n] = k_buf[flat_indices, :, :n]
            v_buf[:, :, :n] = v_buf[flat_indices, :, :n]
        return cache


class Transformer(nn.Module):
    """Upstream's WMT Transformer (defaults: the 133,521,408-parameter base).

    Args:
      ntoken: vocabulary size (shared source/target embedding and output projection).
      d_model, nhead, d_hid (FFN width), nlayers (each of encoder and decoder).
      activation: 'relu', 'tanh' or a callable.
      glu, layer_norm_eps, attention_temp, pre_ln: upstream's switches.
      use_sdpa: attention through `F.scaled_dot_product_attention` (else the reference).
    """

    def __init__(
        self,
        ntoken: int = 32000,
        d_model: int = 1024,
        nhead: int = 16,
        d_hid: int = 1024,
        nlayers: int = 6,
        activation: str | Callable[[Tensor], Tensor] = 'relu',
        glu: bool = False,
        layer_norm_eps: float = 1e-6,
        attention_temp: float = 1.0,
        pre_ln: bool = True,
        use_sdpa: bool = True,
    ) -> None:
        super().__init__()
        args = (d_model, nhead, d_hid, nlayers, activation, glu, layer_norm_eps,
                attention_temp, pre_ln, use_sdpa)  # fmt: skip
        self.pos_encoder = PositionalEncoding(d_model)
        self.shared_embedding = nn.Embedding(ntoken, d_model)
        self.encoder = Encoder(*args)
        self.decoder = Decoder(*args)
        # Shared between encoder and decoder (registered under both, as upstream).
        self.encoder.pos_encoder = self.pos_encoder
        self.encoder.shared_embedding = self.shared_embedding
        self.decoder.pos_encoder = self.pos_encoder
        self.decoder.shared_embedding = self.shared_embedding
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.normal_(module.bias, std=1e-6)

    def set_sdpa(self, use_sdpa: bool) -> None:
        """Switch every attention block between SDPA and the reference math."""
        for m in self.modules():
            if isinstance(m, MultiheadAttention):
                m.use_sdpa = use_sdpa

    def forward(
        self,
        src: Tensor,
        tgt: Tensor,
        inputs_positions: Tensor | None = None,
        targets_positions: Tensor | None = None,
        inputs_segmentation: Tensor | None = None,
        targets_segmentation: Tensor | None = None,
        decode: bool = False,
        dropout_rate: float = DROPOUT_RATE,
    ) -> Tensor:
        """src, tgt [B, L] ids (0 = padding) and optional packing keys -> logits [B, Lt, vocab].

        For autoregressive decoding use `decoder.init_cache` / `decoder.decode_step`
        (`decode=True` is upstream's spelling of it and is not supported here).
        """
        if decode:
            raise NotImplementedError('Use decoder.init_cache / decoder.decode_step to decode.')
        if src.size(0) != tgt.size(0):
            raise RuntimeError('The batch size of src and tgt must be equal.')
        memory = self.encoder(src, inputs_positions, inputs_segmentation, dropout_rate)
        return self.decoder(
            tgt, memory, src, targets_positions, inputs_segmentation, targets_segmentation,
            dropout_rate,
        )  # fmt: skip
