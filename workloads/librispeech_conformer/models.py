"""Conformer CTC model for LibriSpeech, as upstream AlgoPerf v0.6 builds it.

Faithful to `librispeech_conformer/librispeech_pytorch/models.py` (a port of
init2winit's `conformer.py`): module and parameter names (so the parameter-type tree
matches upstream's, quirks included: the conv module's `lin1/lin2/lin3` contain
'conv' in their path and are typed CONV_WEIGHT), registration order, shapes, the
order of RNG draws at construction followed by upstream's `initialize` pass
(Xavier-uniform weights and zero biases for every Linear and Conv1d), so a seed gives
upstream's initial weights. Numerics kept: the log-mel frontend and SpecAugment
inside the model (train mode only), TF-"SAME" stride-2 subsampling convs, sinusoidal
positions, LayerNorm as `(1 + scale)` with eps 1e-6, the per-dimension query scaler
(1.442695041 · softplus), attention output times the temperature, the padding-aware
batch norm (momentum 0.001 on the new statistic, eps 1e-3, biased variance over
valid frames), swish or GELU (tanh approximation in the feed-forward modules, exact
in the conv module, as upstream), post-block LayerNorm switch and dropout rate given
at forward time.

Attention has two paths with the same math: `attention_reference` (explicit
softmax(q kᵀ / sqrt(d)) v with padded keys at -inf, what upstream's math-only SDPA
computes) and `F.scaled_dot_product_attention` with the boolean key-padding mask
(any backend; upstream disables flash and memory-efficient kernels globally),
picked per model by `use_sdpa`. No host syncs: padding masks stay on the device
(upstream's model has none either; its decode and loss do, see workload.py).

Differences, none numeric beyond rounding: the padding downsampling of the
subsampling convs is a stride-2 slice (upstream: a 1x1 stride-2 conv with a ones
kernel, kept as the `paddings_kernel` buffer for state_dict compatibility); the
batch-norm running statistics are updated in place (same formula); `dim`, an
unused buffer of upstream's batch norm, is kept for the same reason.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from workloads.librispeech_conformer import preprocessor
from workloads.librispeech_conformer.spec_augment import SpecAug

DROPOUT_RATE = 0.1
_R_SOFTPLUS_0 = 1.442695041  # 1 / softplus(0): the query scale starts at 1.


@dataclasses.dataclass(frozen=True)
class ConformerConfig:
    """Upstream's `ConformerConfig` defaults (v0.6); `use_sdpa` is ours."""

    vocab_size: int = 1024
    encoder_dim: int = 512
    num_attention_heads: int = 8
    num_encoder_layers: int = 4
    attention_dropout_rate: float = 0.0
    feed_forward_dropout_rate: float = 0.0
    convolution_kernel_size: int = 5
    feed_forward_expansion_factor: int = 4
    freq_mask_count: int = 2
    freq_mask_max_bins: int = 27
    time_mask_count: int = 10
    time_mask_max_frames: int = 40
    time_mask_max_ratio: float = 0.05
    use_dynamic_time_mask_max_frames: bool = True
    batch_norm_momentum: float = 1 - 0.999
    batch_norm_epsilon: float = 0.001
    use_specaug: bool = True
    attention_temperature: float = 1.0
    activation_function_name: str = 'swish'
    use_post_layer_norm: bool = True
    use_sdpa: bool = True


def initialize(module: nn.Module) -> None:
    """Upstream's `initialize`: Xavier-uniform weight, zero bias for Linear and Conv1d."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)


def make_spec_aug(config) -> SpecAug:
    return SpecAug(
        freq_mask_count=config.freq_mask_count,
        freq_mask_max_bins=config.freq_mask_max_bins,
        time_mask_count=config.time_mask_count,
        time_mask_max_frames=config.time_mask_max_frames,
        time_mask_max_ratio=config.time_mask_max_ratio,
        use_dynamic_time_mask_max_frames=config.use_dynamic_time_mask_max_frames,
    )


class LayerNorm(nn.Module):
    """LayerNorm with zero-initialised `scale` applied as (1 + scale), eps 1e-6."""

    def __init__(self, dim: int, epsilon: float = 1e-6) -> None:
        super().__init__()
        self.dim = dim
        self.epsilon = epsilon
        self.scale = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (self.dim,), 1 + self.scale, self.bias, self.epsilon)


class BatchNorm(nn.Module):
    """Padding-aware batch norm over [B, T, D] features (upstream's speech BN).

    Training: mean and biased variance over the valid frames of the batch;
    running = (1 - momentum) · running + momentum · batch (momentum 0.001 upstream;
    `update_batch_norm_fn` sets it to 0 to freeze). Eval: running statistics. The
    scale parameter is applied as (1 + scale); padded frames are output as 0.

    Args:
      dim: feature width.
      momentum: weight of the new batch statistic.
      epsilon: added to the variance.
      scale_name: 'scale' (Conformer) or 'weight' (DeepSpeech), upstream's names.
      sync: all-reduce the sums across ranks (differentiably) when a process group
        is initialised (DeepSpeech upstream; the Conformer's BN is rank-local).
    """

    _algoperf_batch_norm = True  # Seen by pytorch_utils.update_batch_norm_fn.

    def __init__(
        self,
        dim: int,
        momentum: float = 1 - 0.999,
        epsilon: float = 1e-3,
        scale_name: str = 'scale',
        sync: bool = False,
        dim_buffer: bool = False,
    ) -> None:
        super().__init__()
        self.register_buffer('running_mean', torch.zeros(dim))
        self.register_buffer('running_var', torch.ones(dim))
        self.scale_name = scale_name
        setattr(self, scale_name, nn.Parameter(torch.zeros(dim)))
        self.bias = nn.Parameter(torch.zeros(dim))
        if dim_buffer:
            self.register_buffer('dim', torch.tensor([float(dim)]))
        self.momentum = momentum
        self.epsilon = epsilon
        self.sync = sync

    def _all_reduce(self, t: Tensor) -> Tensor:
        if self.sync and dist.is_available() and dist.is_initialized():
            import torch.distributed.nn.functional as dist_fn

            return dist_fn.all_reduce(t)
        return t

    def forward(self, inputs: Tensor, input_paddings: Tensor) -> Tensor:
        mask = (1 - input_paddings)[:, :, None]
        valid = mask != 0
        if self.training:
            masked = inputs.masked_fill(~valid, 0)
            # One all-reduce for the sums and the count (upstream: two).
            sums = self._all_reduce(
                torch.cat([masked.sum(dim=(0, 1)), mask.sum().reshape(1).to(inputs.dtype)])
            )
            count = sums[-1]
            mean = sums[:-1] / count
            var = self._all_reduce((torch.square(masked - mean) * mask).sum(dim=(0, 1))) / count
            m = self.momentum
            if torch.is_tensor(m) or m != 0:
                with torch.no_grad():
                    self.running_mean.copy_((1 - m) * self.running_mean + m * mean.detach())
                    self.running_var.copy_((1 - m) * self.running_var + m * var.detach())
        else:
            mean, var = self.running_mean, self.running_var
        scale = getattr(self, self.scale_name)
        out = (inputs - mean) * ((1 + scale) * torch.rsqrt(var + self.epsilon)) + self.bias
        return out.masked_fill(~valid, 0)


def same_padding(length: int, stride: int = 2, kernel: int = 3) -> tuple[int, int]:
    """TF "SAME" (before, after) padding of one axis."""
    total = max(kernel - (stride if length % stride == 0 else length % stride), 0)
    return total // 2, total - total // 2


class Conv2dSubsampling(nn.Module):
    """3x3 stride-2 conv with TF "SAME" padding, ReLU (or tanh), padded frames zeroed.

    Args:
      input_channels, output_channels: channels in and out.
      use_tanh: tanh instead of ReLU (a DeepSpeech variant).
      paddings_kernel_buffer: keep upstream's Conformer buffer of the same name.
    """

    def __init__(
        self,
        input_channels: int,
        output_channels: int,
        use_tanh: bool = False,
        paddings_kernel_buffer: bool = False,
    ) -> None:
        super().__init__()
        self.input_channels = input_channels
        self.output_channels = output_channels
        self.use_tanh = use_tanh
        self.kernel = nn.Parameter(
            nn.init.xavier_uniform_(torch.empty(output_channels, input_channels, 3, 3))
        )
        self.bias = nn.Parameter(torch.zeros(output_channels))
        if paddings_kernel_buffer:
            self.register_buffer('paddings_kernel', torch.ones([1, 1, 1]))

    def forward(self, inputs: Tensor, paddings: Tensor) -> tuple[Tensor, Tensor]:
        """[B, C, T, F], [B, T] -> [B, C', ceil(T/2), ceil(F/2)], [B, ceil(T/2)]."""
        top, bottom = same_padding(inputs.shape[2])
        left, right = same_padding(inputs.shape[3])
        outputs = F.conv2d(
            F.pad(inputs, (left, right, top, bottom)), self.kernel, self.bias, stride=(2, 2)
        )
        outputs = torch.tanh(outputs) if self.use_tanh else F.relu(outputs)
        out_paddings = paddings[:, ::2]
        return outputs * (1 - out_paddings)[:, None, :, None], out_paddings


class AddPositionalEmbedding(nn.Module):
    """Sinusoidal position signal [1, T, dim]: sin then cos over geometric timescales."""

    def __init__(self, embedding_dim: int = 512, min_timescale=1, max_timescale=10_000):
        super().__init__()
        self.embedding_dim = embedding_dim
        num_timescales = embedding_dim // 2
        increment = math.log(float(max_timescale) / float(min_timescale)) / (num_timescales - 1)
        inv = min_timescale * torch.exp(
            torch.arange(num_timescales, dtype=torch.float32) * -increment
        )
        self.register_buffer('inv_timescales', inv[None, None, :])

    def forward(self, seq_length: int) -> Tensor:
        position = torch.arange(seq_length, dtype=torch.float32, device=self.inv_timescales.device)
        scaled_time = position[None, :, None] * self.inv_timescales
        signal = torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=2)
        if self.embedding_dim % 2:
            signal = F.pad(signal, (0, 1))
        return signal


class Subsample(nn.Module):
    """Two subsampling convs (T/4, 80 -> 20 bins), Linear to encoder_dim, positions, dropout."""

    def __init__(self, encoder_dim: int = 512, num_bins: int = preprocessor.NUM_BINS):
        super().__init__()
        self.encoder_dim = encoder_dim
        self.conv1 = Conv2dSubsampling(1, encoder_dim, paddings_kernel_buffer=True)
        self.conv2 = Conv2dSubsampling(encoder_dim, encoder_dim, paddings_kernel_buffer=True)
        self.linear = nn.Linear(encoder_dim * num_bins // 4, encoder_dim)
        self.pos_encode = AddPositionalEmbedding(embedding_dim=encoder_dim)

    def forward(self, inputs, input_paddings, dropout_rate):
        outputs, paddings = self.conv1(inputs[:, None], input_paddings)
        outputs, paddings = self.conv2(outputs, paddings)
        b, c, t, f = outputs.shape
        outputs = self.linear(outputs.permute(0, 2, 3, 1).reshape(b, t, f * c))
        outputs = outputs + self.pos_encode(t)
        return F.dropout(outputs, dropout_rate, training=self.training), paddings


def _activation(name: str, approximate_gelu: bool):
    if name == 'swish':
        return F.silu
    if name == 'gelu':
        return partial(F.gelu, approximate='tanh') if approximate_gelu else F.gelu
    raise ValueError(f'Only "swish" and "gelu" are supported, received {name!r}.')


class FeedForwardModule(nn.Module):
    """LN -> Linear(4x) -> activation -> mask -> Linear -> mask -> dropout."""

    def __init__(self, config: ConformerConfig) -> None:
        super().__init__()
        self.config = config
        dim, hidden = config.encoder_dim, config.encoder_dim * config.feed_forward_expansion_factor
        self.ln = LayerNorm(dim)
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.activation = _activation(config.activation_function_name, approximate_gelu=True)

    def forward(self, inputs, padding_mask, dropout_rate):
        x = self.activation(self.linear1(self.ln(inputs)))
        x = F.dropout(x, self.config.feed_forward_dropout_rate, training=self.training)
        x = self.linear2(x * padding_mask) * padding_mask
        return F.dropout(x, dropout_rate, training=self.training)


class QueryScaler(nn.Module):
    """Per-dimension learned query scale 1.442695041 · softplus(scale) (1 at init)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.scale = nn.Parameter(torch.zeros(dim))

    def forward(self, inputs: Tensor) -> Tensor:
        return inputs * (_R_SOFTPLUS_0 * F.softplus(self.scale))


def attention_reference(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor) -> Tensor:
    """softmax(q kᵀ / sqrt(d)) v with padded keys excluded. q, k, v: [B, H, T, d]."""
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(key_padding_mask[:, None, None, :], float('-inf'))
    return torch.matmul(F.softmax(scores, dim=-1), v)


class MHSAwithQS(nn.Module):
    """Self-attention with a fused in_proj, the query scaler and an output temperature."""

    def __init__(self, config: ConformerConfig) -> None:
        super().__init__()
        self.embed_dim = config.encoder_dim
        self.num_heads = config.num_attention_heads
        self.attention_dropout_rate = config.attention_dropout_rate
        self.attention_temperature = config.attention_temperature
        self.use_sdpa = config.use_sdpa
        self.in_proj = nn.Linear(config.encoder_dim, 3 * config.encoder_dim)
        self.out_proj = nn.Linear(config.encoder_dim, config.encoder_dim)
        self.qs = QueryScaler(dim=config.encoder_dim // config.num_attention_heads)

    def forward(self, inputs: Tensor, key_padding_mask: Tensor) -> Tensor:
        b, t, d = inputs.shape
        q, k, v = self.in_proj(inputs).split(self.embed_dim, dim=2)
        q = self.qs(q.view(b, t, self.num_heads, -1)).transpose(1, 2)
        k = k.view(b, t, self.num_heads, -1).transpose(1, 2)
        v = v.view(b, t, self.num_heads, -1).transpose(1, 2)
        if self.use_sdpa:
            # Upstream passes its (zero) attention dropout rate in eval mode too.
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=~key_padding_mask[:, None, None, :],
                dropout_p=self.attention_dropout_rate,
            )  # fmt: skip
        else:
            out = attention_reference(q, k, v, key_padding_mask)
        out = out.transpose(1, 2).reshape(b, t, d) * self.attention_temperature
        return self.out_proj(out)


class MultiHeadedSelfAttention(nn.Module):
    """LN -> self-attention over valid keys -> dropout."""

    def __init__(self, config: ConformerConfig) -> None:
        super().__init__()
        self.config = config
        self.ln = LayerNorm(config.encoder_dim)
        self.self_attention = MHSAwithQS(config)

    def forward(self, inputs, paddings, dropout_rate):
        outputs = self.self_attention(self.ln(inputs), key_padding_mask=paddings == 1)
        return F.dropout(outputs, dropout_rate, training=self.training)


class ConvolutionBlock(nn.Module):
    """LN -> GLU(lin1, lin2) -> mask -> depthwise conv -> padding-aware BN -> act -> lin3."""

    def __init__(self, config: ConformerConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.encoder_dim
        self.ln = LayerNorm(dim)
        self.lin1 = nn.Linear(dim, dim)
        self.lin2 = nn.Linear(dim, dim)
        self.conv1 = nn.Conv1d(
            dim, dim, kernel_size=(config.convolution_kernel_size,), stride=(1,),
            padding='same', bias=False, groups=dim,
        )  # fmt: skip
        self.bn = BatchNorm(
            dim, config.batch_norm_momentum, config.batch_norm_epsilon, dim_buffer=True
        )
        self.lin3 = nn.Linear(dim, dim)
        # Upstream's conv module uses exact GELU (its FF modules the tanh approximation).
        self.activation = _activation(config.activation_function_name, approximate_gelu=False)

    def forward(self, inputs, input_paddings, dropout_rate):
        x = self.ln(inputs)
        x = F.glu(torch.cat([self.lin1(x), self.lin2(x)], dim=2))
        x = x * (1 - input_paddings[:, :, None])
        x = self.conv1(x.permute(0, 2, 1)).permute(0, 2, 1)
        x = self.activation(self.bn(x, input_paddings))
        return F.dropout(self.lin3(x), dropout_rate, training=self.training)


class ConformerBlock(nn.Module):
    """x + ½FF; x + MHSA; x + Conv; x + ½FF; optional LayerNorm."""

    def __init__(self, config: ConformerConfig) -> None:
        super().__init__()
        self.ff1 = FeedForwardModule(config)
        self.mhsa = MultiHeadedSelfAttention(config)
        self.conv = ConvolutionBlock(config)
        self.ff2 = FeedForwardModule(config)
        self.ln = LayerNorm(config.encoder_dim) if config.use_post_layer_norm else None

    def forward(self, inputs, input_paddings, dropout_rate):
        padding_mask = 1 - input_paddings[:, :, None]
        inputs = inputs + 0.5 * self.ff1(inputs, padding_mask, dropout_rate)
        inputs = inputs + self.mhsa(inputs, input_paddings, dropout_rate)
        inputs = inputs + self.conv(inputs, input_paddings, dropout_rate)
        inputs = inputs + 0.5 * self.ff2(inputs, padding_mask, dropout_rate)
        if self.ln is not None:
            inputs = self.ln(inputs)
        return inputs


class ConformerEncoderDecoder(nn.Module):
    """Audio [B, samples] + paddings -> (logits [B, T', vocab], paddings [B, T'])."""

    def __init__(self, config: ConformerConfig) -> None:
        super().__init__()
        self.config = config
        self.preprocessor = preprocessor.MelFilterbankFrontend()
        self.specaug = make_spec_aug(config)
        self.subsample = Subsample(config.encoder_dim, preprocessor.NUM_BINS)
        self.conformers = nn.ModuleList(
            [ConformerBlock(config) for _ in range(config.num_encoder_layers)]
        )
        self.ln = LayerNorm(config.encoder_dim)
        self.lin = nn.Linear(config.encoder_dim, config.vocab_size)
        initialize(self)

    def encode(self, features: Tensor, paddings: Tensor, dropout_rate: float):
        """Log-mel features [B, T, 80] -> encoder outputs [B, T/4, D] and their paddings."""
        outputs, paddings = self.subsample(features, paddings, dropout_rate)
        for conformer in self.conformers:
            outputs = conformer(outputs, paddings, dropout_rate)
        return outputs, paddings

    def forward(self, inputs: Tensor, input_paddings: Tensor, dropout_rate: float = DROPOUT_RATE):
        outputs, paddings = self.preprocessor(inputs, input_paddings)
        if self.training and self.config.use_specaug:
            outputs, paddings = self.specaug(outputs, paddings)
        outputs, paddings = self.encode(outputs, paddings, dropout_rate)
        return self.lin(self.ln(outputs)), paddings
