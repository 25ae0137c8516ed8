"""ImageNet ResNet-50 in PyTorch: the base workload and upstream's three variants.

Upstream: `algoperf/workloads/imagenet_resnet/workload.py` (base class) and
`imagenet_pytorch/workload.py` (snapshot 2c90454). Kept as upstream: the model
(`models.py`), `model_fn` (TRAIN applies `update_batch_norm_fn` to every module, so BN
running statistics move only when `update_batch_norm` is True; EVAL with
`update_batch_norm=True` is an error; the dropout rate is accepted and unused), the
loss (`F.cross_entropy(reduction='none', label_smoothing=...)`, int labels or soft
[B, C] targets, times the optional mask), the eval metrics `{'accuracy', 'loss'}`
(number correct and summed loss over ceil(num_examples / batch) batches, all-reduced,
divided by num_examples), `is_output_params` and the batch layout. Constants come from
`spec.py`.

`ImageClassificationWorkload` is the part shared with ViT (`workloads/imagenet_vit`) and
CIFAR (`workloads/cifar`), which upstream share by inheritance or by copy.

Batches (per device): `inputs` float32 [B, 3, 224, 224] (NCHW, normalised), `targets`
int64 [B] (or float32 [B, 1000] soft targets after mixup); eval batches may carry
`weights` float32 [B] (0 marks padding).

Speed (ours, off by default, same math): `channels_last=True` stores the model's conv
weights and feeds its inputs in the channels-last memory format, which cuDNN's fastest
convolution and batch-norm kernels want (tensor cores, no NCHW<->NHWC transposes).
Parameter names, shapes and values are unchanged; only strides differ, so a submission
that `.view()`s a conv weight as 2-D (instead of `.reshape()`) would fail, which is why
it is opt-in.

Data: `queues.imagenet_queue` over the ImageFolder layout (DALI, or the PIL DataLoader
reference; see `input_pipeline.py`); `_build_synthetic_input_queue` gives batches with
the real layout for `algoperf profile`.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F

import algoperf.random_utils as prng
from algoperf import pytorch_utils, spec
from algoperf.workload_base import EvalPass, SpecWorkload
from workloads.imagenet_resnet import models
from workloads.imagenet_resnet.spec import (
    IMAGENET_RESNET,
    IMAGENET_RESNET_GELU,
    IMAGENET_RESNET_LARGE_BN_INIT,
    IMAGENET_RESNET_SILU,
)

_SYNTHETIC_POOL = 2  # Distinct synthetic batches, cycled (a 1,024-image batch is 616 MB).


class ImageClassificationWorkload(SpecWorkload):
    """Softmax-CE image classification: model placement, BN-aware `model_fn`, loss, eval.

    Subclasses set `workload_spec`, `num_classes` and `input_shape` and implement
    `_build_model`, `is_output_params` and the data methods.

    Args:
      runtime: device, rank and world size (default: from the environment).
      channels_last: store the model and feed inputs channels-last (see module docstring).
    """

    num_classes: int = 1000
    input_shape: tuple[int, int, int] = (3, 224, 224)
    # Upstream builds eval iterators with cache/repeat only for the test split.
    _repeat_all_eval_splits: bool = False

    def __init__(self, runtime=None, channels_last: bool = False, **kwargs) -> None:
        super().__init__(runtime=runtime, **kwargs)
        self.channels_last = channels_last
        # Set by the runner from --pytorch_eval_num_workers (upstream's property).
        self._eval_num_workers: int | None = None

    @property
    def eval_num_workers(self) -> int:
        if self._eval_num_workers is None:
            raise ValueError('eval_num_workers property must be set before workload is used.')
        return self._eval_num_workers

    @eval_num_workers.setter
    def eval_num_workers(self, eval_num_workers: int) -> None:
        self._eval_num_workers = eval_num_workers

    # ---- model ---------------------------------------------------------------------------------
    def _build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def init_model_fn(self, rng: spec.RandomState) -> spec.ModelInitState:
        """Build on the CPU with upstream's seeding (same initial weights), then move.

        Args:
          rng: the model-init RandomState; its first word seeds torch's global RNG.

        Returns:
          (model, None); the model is DDP-wrapped when distributed.
        """
        torch.random.manual_seed(int(rng[0]))
        model = self._build_model()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return self._place_model(model), None

    def _inputs(self, batch: dict[str, spec.Tensor]) -> spec.Tensor:
        inputs = batch['inputs']
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    def model_fn(
        self,
        params: spec.ParameterContainer,
        augmented_and_preprocessed_input_batch: dict[str, spec.Tensor],
        model_state: spec.ModelAuxiliaryState,
        mode: spec.ForwardPassMode,
        rng: spec.RandomState,
        update_batch_norm: bool,
        dropout_rate: float = 0.0,
    ) -> tuple[spec.Tensor, spec.ModelAuxiliaryState]:
        """[B, 3, H, W] inputs -> ([B, num_classes] logits, None); no_grad in EVAL.

        In TRAIN, BN layers update their running statistics only if `update_batch_norm`
        (upstream's `update_batch_norm_fn`: momentum 0 freezes them). The dropout rate is
        accepted for the v0.6 API; the model has no dropout.
        """
        del model_state, rng, dropout_rate
        model = params
        if mode == spec.ForwardPassMode.EVAL and update_batch_norm:
            raise ValueError('Batch norm statistics cannot be updated during evaluation.')
        if mode == spec.ForwardPassMode.TRAIN:
            model.apply(
                functools.partial(
                    pytorch_utils.update_batch_norm_fn, update_batch_norm=update_batch_norm
                )
            )
        with self._forward_context(model, mode):
            logits = model(self._inputs(augmented_and_preprocessed_input_batch))
        return logits, None

    # ---- loss and eval -------------------------------------------------------------------------
    def loss_fn(
        self,
        label_batch: spec.Tensor,
        logits_batch: spec.Tensor,
        mask_batch: spec.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, spec.Tensor]:
        """Per-example softmax cross-entropy (no regularisation, not synced).

        Args:
          label_batch: int64 [B] class indices or float [B, C] (soft) targets.
          logits_batch: [B, C].
          mask_batch: optional [B] weights (0 = padding).
          label_smoothing: as `F.cross_entropy`'s.

        Returns:
          {'summed': scalar, 'n_valid_examples': scalar tensor on the logits' device (the
          mask's sum, or the int64 batch size without a mask), 'per_example': [B]}.
        """
        per_example = F.cross_entropy(
            logits_batch, label_batch, reduction='none', label_smoothing=label_smoothing
        )
        if mask_batch is not None:
            per_example = per_example * mask_batch
            n_valid = mask_batch.sum()
        else:
            n_valid = torch.as_tensor(len(per_example), device=per_example.device)
        return {
            'summed': per_example.sum(),
            'n_valid_examples': n_valid,
            'per_example': per_example,
        }

    def _eval_batch(self, params, batch: dict[str, spec.Tensor], model_rng) -> spec.Tensor:
        """[number correct, summed loss, real examples] of one batch (weights 0 skip padding)."""
        logits, _ = self.model_fn(params, batch, None, spec.ForwardPassMode.EVAL, model_rng, False)
        weights = batch.get('weights')
        if weights is None:
            weights = torch.ones(len(logits), device=logits.device)
        correct = ((logits.argmax(dim=1) == batch['targets']) * weights).sum()
        loss = self.loss_fn(batch['targets'], logits, weights)['summed']
        return torch.stack([correct.double(), loss.double(), weights.sum().double()])

    def _eval_model_on_split(
        self,
        split: str,
        num_examples: int,
        global_batch_size: int,
        params: spec.ParameterContainer,
        model_state: spec.ModelAuxiliaryState,
        rng: spec.RandomState,
        data_dir: str,
        global_step: int = 0,
    ) -> dict[str, float]:
        """{'accuracy', 'loss'}: sums over one pass / min(num_examples, examples present).

        A pass is ceil(num_examples / batch) batches (upstream), or fewer where the real
        reader's split holds fewer images; batches are evaluated in slices of at most
        `eval_examples_per_forward()`. Sums are float64 (upstream: float32; 50,000
        float32 losses lose ~4 digits).
        """
        del model_state, global_step
        data_rng, model_rng = prng.split(rng, 2)
        if split not in self._eval_iters:
            # These iterators repeat forever, so later evals reuse them (upstream).
            repeat = self._repeat_all_eval_splits or split == 'test'
            self._eval_iters[split] = self._build_input_queue(
                data_rng,
                split,
                data_dir,
                global_batch_size,
                cache=repeat,
                repeat_final_dataset=repeat,
                num_batches=math.ceil(num_examples / global_batch_size),
            )
        totals = torch.zeros(3, dtype=torch.float64, device=self.runtime.device)
        for batch in self._one_pass(self._eval_iters[split], num_examples, global_batch_size):
            totals += self._eval_in_chunks(
                lambda b: self._eval_batch(params, b, model_rng), batch
            )
        if self.runtime.distributed:
            dist.all_reduce(totals)
        correct, loss, present = totals.tolist()  # The eval's one host sync.
        count = self._eval_count(split, num_examples, present)
        return {'accuracy': correct / count, 'loss': loss / count}

    # ---- data ----------------------------------------------------------------------------------
    def _build_synthetic_input_queue(
        self, data_rng: spec.RandomState, split: str, global_batch_size: int
    ) -> Iterator[dict[str, spec.Tensor]]:
        """Endless device batches with the real layout: a few made once, then cycled.

        `inputs` float32 [b, *input_shape] standard normal (the scale of normalised
        images), `targets` int64 [b] uniform over the classes, eval splits add all-ones
        float32 `weights`; b = global_batch_size // world_size.

        Args:
          data_rng: RandomState; its first word (plus the rank) seeds the generator.
          split: 'train' or an eval split.
          global_batch_size: divided by the world size for this rank's batch.
        """
        n = global_batch_size // self.runtime.world_size
        device = self.runtime.device
        gen = torch.Generator(device=device).manual_seed(int(data_rng[0]) + self.runtime.rank)
        pool = []
        for _ in range(_SYNTHETIC_POOL):
            batch = {
                'inputs': torch.randn((n, *self.input_shape), generator=gen, device=device),
                'targets': torch.randint(0, self.num_classes, (n,), generator=gen, device=device),
            }
            if split != 'train':
                batch['weights'] = torch.ones(n, dtype=torch.float32, device=device)
            pool.append(batch)
        return itertools.cycle(pool)


class ImagenetResNetWorkload(ImageClassificationWorkload):
    """ResNet-50 v1.5 on ImageNet-1k (upstream `ImagenetResNetWorkload`)."""

    workload_spec = IMAGENET_RESNET
    # ResNet-50 at 224 x 224 under no_grad: the stem and layer1 maps are 3.2 MB each per
    # image, a bottleneck keeps ~4 alive; ~16 MB per image (1,024 images: ~16 GB).
    eval_bytes_per_example = 16 << 20
    num_classes = 1000
    input_shape = (3, 224, 224)
    data_backend = 'auto'  # 'dali', 'pil' or 'auto' (DALI when installed).
    use_randaug = False  # ViT's train augmentations (upstream: on for ViT's train split).
    use_mixup = False

    def _build_model(self) -> torch.nn.Module:
        """The model on the current default device (use `torch.device('meta')` to count)."""
        extra = self.workload_spec.extra
        act_fnc = models.activation(use_silu=extra['use_silu'], use_gelu=extra['use_gelu'])
        return models.resnet50(
            act_fnc=act_fnc, bn_init_scale=extra['bn_init_scale'], num_classes=self.num_classes
        )

    def is_output_params(self, param_key: spec.ParameterKey) -> bool:
        return param_key in ('fc.weight', 'fc.bias')

    def validate_data_dir(self, data_dir: str) -> None:
        """Fails before any log is written when a split folder is missing or empty."""
        from workloads.imagenet_resnet import input_pipeline

        for split in ('train', 'validation'):
            input_pipeline.split_images(split, data_dir)

    def _build_input_queue(
        self,
        data_rng: spec.RandomState,
        split: str,
        data_dir: str,
        global_batch_size: int,
        cache: bool | None = None,
        repeat_final_dataset: bool | None = None,
        num_batches: int | None = None,
    ) -> Iterator[dict[str, spec.Tensor]]:
        """This rank's device batches (`queues.imagenet_queue`): endless; eval passes repeat.

        An eval pass reads `num_batches` global batches' worth of images (at most the
        split; default the whole split); `cache` and `repeat_final_dataset` are upstream's
        arguments, unused: eval iterators always repeat their pass. `data_dir` is the ImageNet-v2 folder for
        'test' (the runner substitutes --imagenet_v2_data_dir). The backend is the class
        attribute `data_backend` ('auto': DALI when installed, else the PIL DataLoader).
        """
        del cache, repeat_final_dataset
        from workloads.imagenet_resnet.queues import imagenet_queue

        num_examples = None if num_batches is None else num_batches * global_batch_size
        train = split == 'train'
        workers = None if train or self._eval_num_workers is None else self._eval_num_workers
        queue = imagenet_queue(
            split, data_dir, int(data_rng[0]), global_batch_size,
            rank=self.runtime.rank, world_size=self.runtime.world_size, device=self.runtime.device,
            backend=self.data_backend, num_examples=num_examples, num_workers=workers,
            use_randaug=self.use_randaug and train, use_mixup=self.use_mixup and train,
        )  # fmt: skip
        if train:
            return queue
        # The pass the queue cycles: the split's images, at most num_examples (a second
        # listing of the folder, once per split and run: the eval stops at the data).
        from workloads.imagenet_resnet import input_pipeline

        present = len(input_pipeline.split_images(split, data_dir))
        per_pass = math.ceil(min(num_examples or present, present) / global_batch_size)
        return EvalPass(source=queue, batches_per_pass=per_pass)


class ImagenetResNetSiLUWorkload(ImagenetResNetWorkload):
    """SiLU instead of ReLU."""

    workload_spec = IMAGENET_RESNET_SILU


class ImagenetResNetGELUWorkload(ImagenetResNetWorkload):
    """tanh-approximated GELU instead of ReLU."""

    workload_spec = IMAGENET_RESNET_GELU


class ImagenetResNetLargeBNScaleWorkload(ImagenetResNetWorkload):
    """The last BN of each residual branch initialised to 8 instead of 0."""

    workload_spec = IMAGENET_RESNET_LARGE_BN_INIT
