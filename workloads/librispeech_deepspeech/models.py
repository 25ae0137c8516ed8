"""DeepSpeech-style CTC model for LibriSpeech, as upstream AlgoPerf v0.6 builds it.

Faithful to `librispeech_deepspeech/librispeech_pytorch/models.py`: module and
parameter names (so the parameter-type tree matches upstream's), shapes and the
order of RNG draws: upstream builds three of its Linear layers lazily
(`LazyLinear`), materialises them with one forward pass on a random (2, 320000)
batch and then runs the Conformer's `initialize` (Xavier-uniform Linear weights,
zero biases). Here those layers are built uninitialised with their known input
widths, and `reproduce_upstream_init` replays the same draws (the random batch, the
lazy layers' default init in forward order, the Xavier pass) without the forward, so
a seed gives upstream's initial weights. Shared with the Conformer: the log-mel
frontend, SpecAugment (train mode only), the subsampling convs (ReLU or tanh) and the
padding-aware batch norm (here synchronised across ranks, parameter `weight`).

Bidirectional LSTMs: upstream packs each batch with `pack_padded_sequence`, whose
lengths must be on the host (a sync per layer, six per forward). The default path
(`use_packed_lstm=False`) runs each direction of the same `nn.LSTM`'s weights as a
unidirectional LSTM over the padded batch: the forward direction's outputs at valid
frames do not depend on later (padded) frames; the reverse direction runs over each
example reversed within its own length (a device-side gather), so it starts at the
last valid frame as a packed sequence would. Outputs at padded frames are zero in
both paths. `use_packed_lstm=True` is upstream's packed code, the parity reference.

Differences, none numeric beyond rounding: LayerNorm uses `F.layer_norm` (upstream
writes out the mean and biased variance); the synchronised batch norm all-reduces
its sums and count in one call (upstream: two).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workloads.librispeech_conformer import preprocessor
from workloads.librispeech_conformer.models import (
    BatchNorm,
    Conv2dSubsampling,
    LayerNorm,
    initialize,
    make_spec_aug,
)

DROPOUT_RATE = 0.1
MAX_INPUT_LENGTH = 320_000


@dataclasses.dataclass(frozen=True)
class DeepspeechConfig:
    """Upstream's `DeepspeechConfig` defaults (v0.6); `use_packed_lstm` is ours."""

    vocab_size: int = 1024
    encoder_dim: int = 512
    num_lstm_layers: int = 6
    num_ffn_layers: int = 3
    use_specaug: bool = True
    freq_mask_count: int = 2
    freq_mask_max_bins: int = 27
    time_mask_count: int = 10
    time_mask_max_frames: int = 40
    time_mask_max_ratio: float = 0.05
    use_dynamic_time_mask_max_frames: bool = True
    batch_norm_momentum: float = 1 - 0.999
    batch_norm_epsilon: float = 0.001
    enable_residual_connections: bool = True
    enable_decoder_layer_norm: bool = True
    bidirectional: bool = True
    use_tanh: bool = False
    layernorm_everywhere: bool = False
    sync_batch_norm: bool = True
    use_packed_lstm: bool = False


def _uninitialized_linear(in_features: int, out_features: int) -> nn.Linear:
    """A Linear whose construction draws nothing from the RNG (a LazyLinear stand-in)."""
    device = torch.empty(0).device  # The current default device (meta when counting).
    return nn.Linear(in_features, out_features, device='meta').to_empty(device=device)


def _norm(config: DeepspeechConfig) -> tuple[str, nn.Module]:
    if config.layernorm_everywhere:
        return 'normalization_layer', LayerNorm(config.encoder_dim)
    bn = BatchNorm(
        config.encoder_dim,
        config.batch_norm_momentum,
        config.batch_norm_epsilon,
        scale_name='weight',
        sync=config.sync_batch_norm,
    )
    return 'bn_normalization_layer', bn


class Subsample(nn.Module):
    """Two subsampling convs, then Linear to encoder_dim and dropout (no positions)."""

    def __init__(self, config: DeepspeechConfig) -> None:
        super().__init__()
        dim = config.encoder_dim
        self.encoder_dim = dim
        self.conv1 = Conv2dSubsampling(1, dim, use_tanh=config.use_tanh)
        self.conv2 = Conv2dSubsampling(dim, dim, use_tanh=config.use_tanh)
        self.lin = _uninitialized_linear(dim * preprocessor.NUM_BINS // 4, dim)

    def forward(self, inputs, input_paddings, dropout_rate):
        outputs, paddings = self.conv1(inputs[:, None], input_paddings)
        outputs, paddings = self.conv2(outputs, paddings)
        b, c, t, f = outputs.shape
        outputs = self.lin(outputs.permute(0, 2, 3, 1).reshape(b, t, f * c))
        return F.dropout(outputs, dropout_rate, training=self.training), paddings


class FeedForwardModule(nn.Module):
    """BN (or LN) -> Linear -> ReLU (or tanh) -> mask -> dropout."""

    def __init__(self, config: DeepspeechConfig) -> None:
        super().__init__()
        self.config = config
        name, norm = _norm(config)
        self.norm_name = name
        self.add_module(name, norm)
        self.lin = _uninitialized_linear(config.encoder_dim, config.encoder_dim)

    def forward(self, inputs, input_paddings, dropout_rate):
        norm = getattr(self, self.norm_name)
        if self.config.layernorm_everywhere:
            x = norm(inputs)
        else:
            x = norm(inputs, input_paddings)
        x = self.lin(x)
        x = torch.tanh(x) if self.config.use_tanh else F.relu(x)
        x = x * (1 - input_paddings)[:, :, None]
        return F.dropout(x, dropout_rate, training=self.training)


def reverse_within_length(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse the first lengths[b] frames of each x[b] ([B, T, D]); later frames stay.

    An involution; a gather with indices computed on the device (no host sync).
    """
    t = torch.arange(x.shape[1], device=x.device)[None, :]
    index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return torch.gather(x, 1, index[:, :, None].expand_as(x))


def run_lstm_direction(lstm: nn.LSTM, x: Tensor, suffix: str) -> Tensor:
    """One direction of a single-layer `nn.LSTM` as a unidirectional LSTM, zero state."""
    weights = [
        getattr(lstm, f'{name}_l0{suffix}')
        for name in ('weight_ih', 'weight_hh', 'bias_ih', 'bias_hh')
    ]
    zeros = x.new_zeros(1, x.shape[0], lstm.hidden_size)
    out, _, _ = torch.lstm(x, (zeros, zeros), weights, True, 1, 0.0, lstm.training, False, True)
    return out


class BatchRNN(nn.Module):
    """BN (or LN) -> (bi)LSTM over each example's valid frames; zero at padded frames."""

    def __init__(self, config: DeepspeechConfig) -> None:
        super().__init__()
        self.config = config
        self.bidirectional = config.bidirectional
        name, norm = _norm(config)
        self.norm_name = name
        self.add_module(name, norm)
        hidden = config.encoder_dim // 2 if config.bidirectional else config.encoder_dim
        self.lstm = nn.LSTM(
            input_size=config.encoder_dim,
            hidden_size=hidden,
            bidirectional=config.bidirectional,
            batch_first=True,
        )

    def forward(self, inputs: Tensor, input_paddings: Tensor) -> Tensor:
        norm = getattr(self, self.norm_name)
        if self.config.layernorm_everywhere:
            x = norm(inputs)
        else:
            x = norm(inputs, input_paddings)
        if self.config.use_packed_lstm:
            return self._forward_packed(x, input_paddings)
        lengths = (1 - input_paddings).sum(dim=1).long()
        outputs = run_lstm_direction(self.lstm, x, '')
        if self.bidirectional:
            reverse = run_lstm_direction(self.lstm, reverse_within_length(x, lengths), '_reverse')
            outputs = torch.cat([outputs, reverse_within_length(reverse, lengths)], dim=-1)
        return outputs * (1 - input_paddings)[:, :, None]

    def _forward_packed(self, x: Tensor, input_paddings: Tensor) -> Tensor:
        """Upstream's path: pack by lengths (copied to the host), LSTM, pad back with zeros."""
        lengths = torch.sum(1 - input_paddings, dim=1).detach().cpu().numpy()
        packed = nn.utils.rnn.pack_padded_sequence(
            x, lengths, batch_first=True, enforce_sorted=False
        )
        packed_outputs, _ = self.lstm(packed)
        outputs, _ = nn.utils.rnn.pad_packed_sequence(
            packed_outputs, batch_first=True, total_length=x.shape[1]
        )
        return outputs


class DeepspeechEncoderDecoder(nn.Module):
    """Audio [B, samples] + paddings -> (logits [B, T', vocab], paddings [B, T'])."""

    def __init__(self, config: DeepspeechConfig) -> None:
        super().__init__()
        self.config = config
        self.specaug = make_spec_aug(config)
        self.preprocessor = preprocessor.MelFilterbankFrontend()
        self.subsample = Subsample(config)
        self.lstms = nn.ModuleList([BatchRNN(config) for _ in range(config.num_lstm_layers)])
        self.ffns = nn.ModuleList([FeedForwardModule(config) for _ in range(config.num_ffn_layers)])
        self.ln = LayerNorm(config.encoder_dim) if config.enable_decoder_layer_norm else None
        self.lin = nn.Linear(config.encoder_dim, config.vocab_size)
        self.reproduce_upstream_init()

    def reproduce_upstream_init(self) -> None:
        """Replay upstream's post-construction draws: random batch, lazy init, Xavier pass."""
        torch.randn((2, MAX_INPUT_LENGTH))  # Upstream's materialising batch (discarded).
        for lin in [self.subsample.lin] + [ffn.lin for ffn in self.ffns]:
            lin.reset_parameters()  # What LazyLinear does when it materialises.
        initialize(self)

    def forward(self, inputs: Tensor, input_paddings: Tensor, dropout_rate: float = DROPOUT_RATE):
        outputs, paddings = self.preprocessor(inputs, input_paddings)
        if self.training and self.config.use_specaug:
            outputs, paddings = self.specaug(outputs, paddings)
        outputs, paddings = self.subsample(outputs, paddings, dropout_rate)
        residual = self.config.enable_residual_connections
        for lstm in self.lstms:
            out = lstm(outputs, paddings)
            outputs = outputs + out if residual else out
        for ffn in self.ffns:
            out = ffn(outputs, paddings, dropout_rate)
            outputs = outputs + out if residual else out
        if self.ln is not None:
            outputs = self.ln(outputs)
        return self.lin(outputs), paddings
