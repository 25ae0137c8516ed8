"""ImageNet ViT-S/16 in PyTorch: the base workload and upstream's three variants.

Upstream: `algoperf/workloads/imagenet_vit/workload.py` (base class, which subclasses
the ResNet base) and `imagenet_pytorch/workload.py` (snapshot 2c90454). Kept as
upstream: the model (`models.py`, `decode_variant('S/16')`), `model_fn` (the dropout
rate is a forward argument, default 0.0; there is no batch norm, so
`update_batch_norm` is ignored), and everything the ResNet workload shares (loss,
eval metrics, batch layout; see `workloads/imagenet_resnet/workload.py`).
`is_output_params` names the head. Training data add upstream's RandAugment and mixup
(soft [B, 1000] targets), as upstream only on the train split.

Speed (ours): `use_sdpa` routes self-attention through
`F.scaled_dot_product_attention` (flash / memory-efficient kernels) instead of
upstream's explicit matmul-softmax-matmul; same math, parity-tested. Default: on CUDA
only. With dropout > 0 the attention-dropout masks come from a different RNG stream.
"""

from __future__ import annotations

import torch

from algoperf import spec
from workloads.imagenet_resnet.workload import ImagenetResNetWorkload
from workloads.imagenet_vit import models
from workloads.imagenet_vit.spec import (
    IMAGENET_VIT,
    IMAGENET_VIT_GLU,
    IMAGENET_VIT_MAP,
    IMAGENET_VIT_POST_LN,
)


class ImagenetVitWorkload(ImagenetResNetWorkload):
    """ViT-S/16 on ImageNet-1k (upstream `ImagenetVitWorkload`).

    Args:
      runtime: device, rank and world size (default: from the environment).
      use_sdpa: attention through SDPA (default: True on CUDA, False elsewhere).
    """

    workload_spec = IMAGENET_VIT
    # ViT-S/16 under no_grad: 197 tokens x 1,536 MLP floats (1.2 MB) and 6 x 197^2
    # attention scores (0.9 MB) per image, a few alive: ~5 MB per image.
    eval_bytes_per_example = 5 << 20
    variant = 'S/16'
    use_randaug = True
    use_mixup = True

    def __init__(self, runtime=None, use_sdpa: bool | None = None, **kwargs) -> None:
        super().__init__(runtime=runtime, **kwargs)
        self.use_sdpa = self.runtime.device.type == 'cuda' if use_sdpa is None else use_sdpa

    def _build_model(self) -> torch.nn.Module:
        """The model on the current default device (use `torch.device('meta')` to count)."""
        extra = self.workload_spec.extra
        return models.ViT(
            num_classes=self.num_classes,
            use_glu=extra['use_glu'],
            use_post_layer_norm=extra['use_post_layer_norm'],
            use_map=extra['use_map'],
            use_sdpa=self.use_sdpa,
            **models.decode_variant(self.variant),
        )

    def is_output_params(self, param_key: spec.ParameterKey) -> bool:
        return param_key in ('head.weight', 'head.bias')

    def model_fn(
        self,
        params: spec.ParameterContainer,
        augmented_and_preprocessed_input_batch: dict[str, spec.Tensor],
        model_state: spec.ModelAuxiliaryState,
        mode: spec.ForwardPassMode,
        rng: spec.RandomState,
        update_batch_norm: bool,
        dropout_rate: float = models.DROPOUT_RATE,
    ) -> tuple[spec.Tensor, spec.ModelAuxiliaryState]:
        """[B, 3, 224, 224] inputs -> ([B, 1000] logits, None); no_grad in EVAL."""
        del model_state, rng, update_batch_norm
        model = params
        with self._forward_context(model, mode):
            logits = model(
                self._inputs(augmented_and_preprocessed_input_batch), dropout_rate=dropout_rate
            )
        return logits, None


class ImagenetVitGluWorkload(ImagenetVitWorkload):
    """GLU in every MLP block (x * Linear(x) after the GELU)."""

    workload_spec = IMAGENET_VIT_GLU


class ImagenetVitPostLNWorkload(ImagenetVitWorkload):
    """LayerNorm after each residual sum, no final encoder norm."""

    workload_spec = IMAGENET_VIT_POST_LN


class ImagenetVitMapWorkload(ImagenetVitWorkload):
    """Multihead attention pooling instead of global average pooling."""

    workload_spec = IMAGENET_VIT_MAP
