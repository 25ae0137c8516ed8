"""LibriSpeech DeepSpeech in PyTorch: the base workload and upstream's three variants.

Upstream: `librispeech_deepspeech/librispeech_pytorch/workload.py` (snapshot
2c90454), which subclasses the PyTorch Conformer workload: data, batch layout, CTC
loss, greedy decoding and the `{'ctc_loss', 'wer'}` eval are shared (see
`workloads/librispeech_conformer/workload.py`). Here: the model (`models.py`),
`is_output_params` (`lin.*`), no state_dict averaging before eval (its batch norm is
synchronised across ranks in training), targets, budget and model switches from
`spec.py`.

Speed (ours): the LSTMs run over the padded batch without `pack_padded_sequence`,
so the forward has no host syncs (upstream: one per LSTM layer);
`use_packed_lstm=True` selects upstream's packed path (parity-tested).
"""

from __future__ import annotations

import torch

from algoperf import spec
from workloads.librispeech_conformer.workload import LibriSpeechConformerWorkload
from workloads.librispeech_deepspeech import models
from workloads.librispeech_deepspeech.spec import (
    LIBRISPEECH_DEEPSPEECH,
    LIBRISPEECH_DEEPSPEECH_NO_RESNET,
    LIBRISPEECH_DEEPSPEECH_NORM_AND_SPEC_AUG,
    LIBRISPEECH_DEEPSPEECH_TANH,
)


class LibriSpeechDeepSpeechWorkload(LibriSpeechConformerWorkload):
    """DeepSpeech CTC on LibriSpeech 960h (upstream `LibriSpeechDeepSpeechWorkload`).

    Args:
      use_packed_lstm: upstream's packed LSTM path (host syncs) instead of ours.
      Others as `LibriSpeechConformerWorkload` (`use_sdpa` has no effect here).
    """

    workload_spec = LIBRISPEECH_DEEPSPEECH

    def __init__(self, runtime=None, use_packed_lstm: bool = False, **kwargs) -> None:
        super().__init__(runtime=runtime, **kwargs)
        self.use_packed_lstm = use_packed_lstm

    def _model_config(self, **overrides) -> models.DeepspeechConfig:
        extra = self.workload_spec.extra
        return models.DeepspeechConfig(
            use_specaug=self.use_specaug,
            use_tanh=extra['use_tanh'],
            enable_residual_connections=extra['enable_residual_connections'],
            enable_decoder_layer_norm=extra['enable_decoder_layer_norm'],
            layernorm_everywhere=extra['layernorm_everywhere'],
            freq_mask_count=extra['freq_mask_count'],
            time_mask_count=extra['time_mask_count'],
            use_packed_lstm=self.use_packed_lstm,
            **overrides,
        )

    def _build_model(self, **overrides) -> torch.nn.Module:
        """The model on the current default device (use `torch.device('meta')` to count)."""
        return models.DeepspeechEncoderDecoder(self._model_config(**overrides))

    def init_model_fn(self, rng: spec.RandomState) -> spec.ModelInitState:
        """Upstream's seeding and draws (same initial weights); returned in eval mode."""
        torch.random.manual_seed(int(rng[0]))
        model = self._build_model().eval()
        self.requires_sync_before_eval = False
        return self._place_model(model), None

    def is_output_params(self, param_key: spec.ParameterKey) -> bool:
        return param_key in ('lin.weight', 'lin.bias')


class LibriSpeechDeepSpeechTanhWorkload(LibriSpeechDeepSpeechWorkload):
    """tanh instead of ReLU in the subsampling convs and feed-forward layers."""

    workload_spec = LIBRISPEECH_DEEPSPEECH_TANH


class LibriSpeechDeepSpeechNoResNetWorkload(LibriSpeechDeepSpeechWorkload):
    """No residual connections around the LSTM and feed-forward layers."""

    workload_spec = LIBRISPEECH_DEEPSPEECH_NO_RESNET


class LibriSpeechDeepSpeechNormAndSpecAugWorkload(LibriSpeechDeepSpeechWorkload):
    """LayerNorm instead of batch norm, no decoder LayerNorm, 4 freq / 15 time masks."""

    workload_spec = LIBRISPEECH_DEEPSPEECH_NORM_AND_SPEC_AUG
