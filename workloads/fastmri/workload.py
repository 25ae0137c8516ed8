"""fastMRI knee single-coil U-Net in PyTorch: the base workload and upstream's three variants.

Upstream: `algoperf/workloads/fastmri/workload.py` (base class) and
`fastmri_pytorch/workload.py` (snapshot 2c90454). Kept as upstream: the model
(`models.py`), the per-example masked L1 loss (mean over pixels), the eval metrics
`{'ssim', 'loss'}` (per-slice SSIM of de-normalised images, `ssim.py`, and the summed
masked loss, each summed over batches and divided by the number of examples),
`is_output_params` (verbatim) and the batch layout. Constants (targets, budgets,
sizes, model switches) come from `spec.py`.

Batches (per device): `inputs` float32 [B, 320, 320] (normalised, clipped magnitude
image of the under-sampled k-space), `targets` float32 [B, 320, 320] (the
`reconstruction_esc` slice with the same normalisation), `mean`, `std`, `volume_max`
float32 [B]; eval batches also carry `weights` float32 [B] (0 marks padding), as
upstream's DDP queue gives them; train batches have none, as upstream.
"""

from __future__ import annotations

import glob
import itertools
import math
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F

from algoperf import spec
from algoperf.prefetch import Prefetcher
from algoperf.workload_base import EvalPass, SpecWorkload
from workloads.fastmri import models
from workloads.fastmri.spec import (
    FASTMRI,
    FASTMRI_LAYERNORM,
    FASTMRI_MODEL_SIZE,
    FASTMRI_TANH,
)
from workloads.fastmri.ssim import ssim

IMAGE_SIZE = 320  # Upstream center-crops every slice to the 320 x 320 target.
_SYNTHETIC_POOL = 4  # Distinct synthetic batches, cycled.


class FastMRIWorkload(SpecWorkload):
    """U-Net on fastMRI knee single-coil (upstream `FastMRIWorkload`)."""

    workload_spec = FASTMRI
    # Speed switch (models.py, "Speed switch"): InstanceNorm2d as F.group_norm on CPU
    # tensors; no parameter changes, same math to float rounding. Set False for the
    # stock instance_norm path everywhere.
    fast_instance_norm = True
    # Eval forward of one 320 x 320 slice under no_grad on CPU: ~35 MB (a profile at
    # upstream's eval batch of 256 passed 9 GB, issue #16; 32-channel full-resolution
    # maps are 13 MB each, a few alive at once).
    eval_bytes_per_example = 40 << 20

    # ---- model ---------------------------------------------------------------------------------
    def _build_model(self) -> torch.nn.Module:
        """The model on the current default device (use `torch.device('meta')` to count)."""
        extra = self.workload_spec.extra
        return models.UNet(
            num_pool_layers=extra['num_pool_layers'],
            num_channels=extra['num_channels'],
            use_tanh=extra['use_tanh'],
            use_layer_norm=extra['use_layer_norm'],
            fast_instance_norm=self.fast_instance_norm,
        )

    def is_output_params(self, param_key: spec.ParameterKey) -> bool:
        # Upstream's names, verbatim: the final 1x1 conv of the 4-level U-Net. The
        # 3-level model-size variant's is 'up_conv.2.1', which upstream does not list.
        return param_key in ('up_conv.3.1.weight', 'up_conv.3.1.bias')

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
        """[B, 320, 320] inputs -> ([B, 320, 320] outputs, None); no_grad in EVAL."""
        del model_state, rng, update_batch_norm
        model = params
        with self._forward_context(model, mode):
            inputs = augmented_and_preprocessed_input_batch['inputs'].unsqueeze(1)
            outputs = model(inputs, dropout_rate=dropout_rate).squeeze(1)
        return outputs, None

    # ---- loss and eval -------------------------------------------------------------------------
    def loss_fn(
        self,
        label_batch: spec.Tensor,
        logits_batch: spec.Tensor,
        mask_batch: spec.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, spec.Tensor]:
        """Masked per-example mean absolute error (no regularisation, not synced).

        Args:
          label_batch: [B, H, W] targets.
          logits_batch: [B, H, W] model outputs.
          mask_batch: optional [B] weights (0 = padding).
          label_smoothing: ignored, as upstream.

        Returns:
          {'summed': scalar, 'n_valid_examples': scalar tensor on the outputs' device (the
          mask's sum, or the int64 batch size without a mask), 'per_example': [B]}.
        """
        del label_smoothing
        per_example = F.l1_loss(logits_batch, label_batch, reduction='none').mean(dim=(1, 2))
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

    def _eval_batch(
        self, params: spec.ParameterContainer, batch: dict[str, spec.Tensor]
    ) -> dict[str, spec.Tensor]:
        """Summed SSIM and summed masked loss of one batch.

        Upstream slices the batch to its first `weights.sum()` examples before the SSIM
        (a host sync per batch; padding is always at the end). Zeroing the padded
        examples' SSIM gives the same sum without the sync.
        """
        outputs, _ = self.model_fn(params, batch, None, spec.ForwardPassMode.EVAL, None, False)
        targets = batch['targets']
        weights = batch.get('weights')
        if weights is None:
            weights = torch.ones(len(outputs), device=outputs.device)
        per_example_ssim = ssim(
            outputs, targets, mean=batch['mean'], std=batch['std'], volume_max=batch['volume_max']
        )
        valid = weights > 0
        ssim_sum = torch.where(valid, per_example_ssim, torch.zeros_like(per_example_ssim)).sum()
        return {
            'ssim': ssim_sum,
            'loss': self.loss_fn(targets, outputs, weights)['summed'],
            'count': valid.sum(dtype=torch.float32),
        }

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
        """{'ssim', 'loss'}: sums over one pass / min(num_examples, examples present).

        The pass is ceil(num_examples / batch) batches, as upstream, or fewer when the
        split holds fewer slices (the real reader's queue knows its pass). Each batch is
        evaluated in slices of at most `eval_examples_per_forward()` (memory-bounded).
        """
        del model_state, global_step
        num_batches = math.ceil(num_examples / global_batch_size)
        if split not in self._eval_iters:
            # These iterators repeat forever, so later evals reuse them (upstream). Eval
            # preprocessing uses a fixed seed, so the data rng only names the queue.
            self._eval_iters[split] = self._build_input_queue(
                rng,
                split,
                data_dir,
                global_batch_size,
                num_batches=num_batches,
                repeat_final_dataset=True,
            )
        device = self.runtime.device
        totals = {k: torch.zeros((), device=device) for k in ('ssim', 'loss', 'count')}
        for batch in self._one_pass(self._eval_iters[split], num_examples, global_batch_size):
            batch_metrics = self._eval_in_chunks(lambda b: self._eval_batch(params, b), batch)
            totals = {k: v + batch_metrics[k] for k, v in totals.items()}
        if self.runtime.distributed:
            for total in totals.values():
                dist.all_reduce(total)
        # The eval's one host sync.
        ssim_sum, loss_sum, present = torch.stack(list(totals.values())).tolist()
        count = self._eval_count(split, num_examples, present)
        return {'ssim': ssim_sum / count, 'loss': loss_sum / count}

    # ---- data ----------------------------------------------------------------------------------
    def validate_data_dir(self, data_dir: str) -> None:
        """FileNotFoundError unless both h5 directories exist and hold `*.h5` files;
        DataError naming a file whose datasets have a wrong dtype or shape."""
        from workloads.fastmri.input_pipeline import LAYOUT, TRAIN_DIR, VAL_DIR, volume_slices

        for sub in (TRAIN_DIR, VAL_DIR):
            path = os.path.join(data_dir, sub)
            if not os.path.isdir(path):
                raise FileNotFoundError(
                    f'--data_dir={data_dir}: directory {path} not found (fastMRI); expected {LAYOUT}.'
                )
            files = sorted(glob.glob(os.path.join(glob.escape(path), '*.h5')))
            if not files:
                raise FileNotFoundError(
                    f'--data_dir={data_dir}: no *.h5 files in {path} (fastMRI); expected {LAYOUT}.'
                )
            for file in files:  # Headers only: ~1 ms a file, ~1.5 s for the 1,172 files.
                volume_slices(file)

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
        """This rank's batches of the h5 files, on the device (see `input_pipeline`)."""
        del cache
        # Lazy: h5py is needed only with real data.
        from workloads.fastmri import input_pipeline

        batches = input_pipeline.get_fastmri_dataset(
            split=split,
            data_dir=data_dir,
            data_rng=data_rng,
            global_batch_size=global_batch_size,
            num_batches=num_batches,
            repeat_final_dataset=bool(repeat_final_dataset),
            rank=self.runtime.rank,
            world_size=self.runtime.world_size,
        )
        if split == 'train':
            # h5 reads and numpy FFTs release the GIL: the next batch is made during the step.
            batches = Prefetcher(batches)
        elif repeat_final_dataset:
            # The replayed pass: its global batches, at most num_batches (the split's
            # slices may be fewer than the spec's count; the eval stops at them).
            per_pass = math.ceil(len(batches.examples) / global_batch_size)
            if num_batches is not None:
                per_pass = min(per_pass, num_batches)
            return EvalPass(source=self._on_device(batches), batches_per_pass=per_pass)
        return self._on_device(batches)

    def _on_device(self, batches) -> Iterator[dict[str, spec.Tensor]]:
        for batch in batches:
            yield {k: self._to_device(v) for k, v in batch.items()}

    def _build_synthetic_input_queue(
        self, data_rng: spec.RandomState, split: str, global_batch_size: int
    ) -> Iterator[dict[str, spec.Tensor]]:
        """Endless device batches with the real layout: a few made once, then cycled.

        Targets are smooth random images (bilinear upsampling of 20 x 20 noise), inputs
        are the targets plus noise (standing in for under-sampling artefacts), both
        instance-normalised and clipped to [-6, 6] as the pipeline does; `mean`, `std`
        and `volume_max` are positive, of the order of real knee slices' magnitudes.

        Args:
          data_rng: RandomState; its first word (plus the rank) seeds the generator.
          split: 'train' (no weights) or an eval split (all-ones weights).
          global_batch_size: divided by the world size for this rank's batch.
        """
        n = global_batch_size // self.runtime.world_size
        device = self.runtime.device
        gen = torch.Generator(device=device).manual_seed(int(data_rng[0]) + self.runtime.rank)

        def normalise(x):
            mean = x.mean(dim=(1, 2), keepdim=True)
            std = x.std(dim=(1, 2), keepdim=True)
            return ((x - mean) / std).clamp(-6, 6)

        pool = []
        for _ in range(_SYNTHETIC_POOL):
            coarse = torch.randn(n, 1, 20, 20, generator=gen, device=device)
            smooth = F.interpolate(coarse, size=(IMAGE_SIZE, IMAGE_SIZE), mode='bilinear')
            targets = normalise(smooth[:, 0])
            noise = torch.randn(n, IMAGE_SIZE, IMAGE_SIZE, generator=gen, device=device)
            u = torch.rand(3, n, generator=gen, device=device)
            batch = {
                'inputs': normalise(targets + 0.5 * noise),
                'targets': targets,
                'mean': 2e-5 + 4e-5 * u[0],
                'std': 1e-5 + 2e-5 * u[1],
                'volume_max': 3e-4 + 3e-4 * u[2],
            }
            if split != 'train':
                batch['weights'] = torch.ones(n, dtype=torch.float32, device=device)
            pool.append(batch)
        return itertools.cycle(pool)


class FastMRIModelSizeWorkload(FastMRIWorkload):
    """64 channels and 3 pooling levels instead of 32 and 4."""

    workload_spec = FASTMRI_MODEL_SIZE


class FastMRITanhWorkload(FastMRIWorkload):
    """Tanh instead of LeakyReLU(0.2)."""

    workload_spec = FASTMRI_TANH


class FastMRILayerNormWorkload(FastMRIWorkload):
    """GroupNorm(1, eps=1e-6) instead of InstanceNorm2d in the ConvBlocks."""

    workload_spec = FASTMRI_LAYERNORM
