"""LibriSpeech Conformer in PyTorch: the base workload and upstream's three variants.

Upstream: `algoperf/workloads/librispeech_conformer/workload.py` (base class),
`librispeech_pytorch/workload.py` and `metrics.py` (snapshot 2c90454). Kept as
upstream: the model (`models.py`, frontend and SpecAugment inside it), `model_fn`
(dropout rate a forward argument, default 0.1; in TRAIN mode `update_batch_norm`
freezes or restores the batch-norm running statistics; output
`((logits, logit_paddings), None)`), the CTC `loss_fn`, greedy decoding, the eval
metrics `{'ctc_loss', 'wer'}`, `is_output_params` (`lin.*`) and, under DDP, the
averaging of the whole state_dict across ranks before every eval (the Conformer's
batch norm is rank-local in training). Constants come from `spec.py`.

Batches (per device, n = global_batch_size // world_size): `inputs` a pair
(audio float32 [n, 320000] raw 16-bit PCM values zero-padded, `input_paddings`
float32 [n, 320000] 1.0 on padding), `targets` a pair (token ids float32 [n, 256]
zero-padded, `target_paddings` float32 [n, 256]).

Speed (ours): attention through `F.scaled_dot_product_attention` with a boolean
key-padding mask on any backend (`use_sdpa`, default True; upstream forces the math
backend globally); the explicit-softmax reference stays switchable and is
parity-tested. No global backend flags are changed. The decode and loss have no
host syncs of their own (PyTorch's `ctc_loss` still copies the lengths to the host).

Real data: `input_pipeline.py` reads upstream's preprocessed layout (`algoperf data
librispeech` writes it, see `convert.py`), per rank. WER detokenizes with the
SentencePiece model `tokenizer_vocab_path` (upstream's constructor argument) or, when
none was given, `<data_dir>/spm_model.vocab` once the data is first read; a
`detokenize` constructor argument overrides both (without either: token ids as words).
Eval passes are padded to full global batches with weight-0 copies (`'weights'`),
which the eval masks out of the loss and WER (upstream's batches had no padding).
`algoperf profile` can run on `_build_synthetic_input_queue`.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist

from algoperf import pytorch_utils, spec
from algoperf.workload_base import SpecWorkload
from workloads.librispeech_conformer import input_pipeline, metrics, models
from workloads.librispeech_conformer.spec import (
    LIBRISPEECH_CONFORMER,
    LIBRISPEECH_CONFORMER_ATTENTION_TEMPERATURE,
    LIBRISPEECH_CONFORMER_GELU,
    LIBRISPEECH_CONFORMER_LAYERNORM,
)

MAX_INPUT_LENGTH = input_pipeline.MAX_INPUT_LENGTH  # Samples: 20 s at 16 kHz.
MAX_TARGET_LENGTH = input_pipeline.MAX_TARGET_LENGTH  # Token ids.
VOCAB_SIZE = input_pipeline.VOCAB_SIZE  # 1024 model outputs; the reader checks target ids.
_SYNTHETIC_POOL = 4  # Distinct synthetic batches, cycled.


class LibriSpeechConformerWorkload(SpecWorkload):
    """Conformer CTC on LibriSpeech 960h (upstream `LibriSpeechConformerWorkload`).

    Args:
      runtime: device, rank and world size (default: from the environment).
      tokenizer_vocab_path: upstream's SentencePiece model path (default: the data's).
      use_specaug: SpecAugment in training (upstream's constructor argument).
      use_sdpa: attention through SDPA (default True) or the explicit reference.
      detokenize: ids -> text for WER (default: the SentencePiece model; ids as words
        until one is known).
    """

    workload_spec = LIBRISPEECH_CONFORMER
    # Eval forward of one 20 s utterance under no_grad: the first subsampling conv's
    # output alone is 512 x 1,000 x 40 floats (82 MB); ~128 MB with its neighbours.
    eval_bytes_per_example = 128 << 20

    def __init__(
        self,
        runtime=None,
        tokenizer_vocab_path: str | None = None,
        use_specaug: bool = True,
        use_sdpa: bool = True,
        detokenize: Callable | None = None,
        **kwargs,
    ) -> None:
        super().__init__(runtime=runtime, **kwargs)
        self.tokenizer_vocab_path = tokenizer_vocab_path
        self._use_specaug = use_specaug
        self.use_sdpa = use_sdpa
        self._detokenize_fixed = detokenize is not None or tokenizer_vocab_path is not None
        if detokenize is None and tokenizer_vocab_path is not None:
            detokenize = input_pipeline.Detokenizer(tokenizer_vocab_path)
        self.detokenize = detokenize or metrics.token_ids_to_text
        self._eval_num_workers: int | None = None  # Set by the runner.
        self.requires_sync_before_eval = False

    @property
    def use_specaug(self) -> bool:
        return self._use_specaug

    @property
    def eval_num_workers(self) -> int:
        if self._eval_num_workers is None:
            raise ValueError('eval_num_workers property must be set before workload is used.')
        return self._eval_num_workers

    @eval_num_workers.setter
    def eval_num_workers(self, value: int) -> None:
        self._eval_num_workers = value

    # ---- model ---------------------------------------------------------------------------------
    def _model_config(self, **overrides) -> models.ConformerConfig:
        extra = self.workload_spec.extra
        return models.ConformerConfig(
            use_specaug=self.use_specaug,
            attention_temperature=extra['attention_temperature'],
            use_post_layer_norm=extra['use_post_layer_norm'],
            activation_function_name='gelu' if extra['use_gelu'] else 'swish',
            use_sdpa=self.use_sdpa,
            **overrides,
        )

    def _build_model(self, **overrides) -> torch.nn.Module:
        """The model on the current default device (use `torch.device('meta')` to count).

        Args:
          **overrides: `ConformerConfig` fields (e.g. small dims in tests).
        """
        return models.ConformerEncoderDecoder(self._model_config(**overrides))

    def init_model_fn(self, rng: spec.RandomState) -> spec.ModelInitState:
        """Build on the CPU with upstream's seeding (same initial weights), then move.

        Returns:
          (model, None); the model is DDP-wrapped when distributed.
        """
        torch.random.manual_seed(int(rng[0]))
        model = self._build_model()
        self.requires_sync_before_eval = self.runtime.distributed
        return self._place_model(model), None

    def is_output_params(self, param_key: spec.ParameterKey) -> bool:
        return param_key in ('lin.weight', 'lin.bias')

    def model_fn(
        self,
        params: spec.ParameterContainer,
        augmented_and_preprocessed_input_batch: dict[str, spec.Tensor],
        model_state: spec.ModelAuxiliaryState,
        mode: spec.ForwardPassMode,
        rng: spec.RandomState,
        update_batch_norm: bool,
        dropout_rate: float = models.DROPOUT_RATE,
    ) -> tuple[tuple[spec.Tensor, spec.Tensor], spec.ModelAuxiliaryState]:
        """(audio, paddings) -> ((logits [B, T', 1024], logit paddings [B, T']), None)."""
        del model_state, rng
        model = params
        if mode == spec.ForwardPassMode.TRAIN:
            model.apply(
                functools.partial(
                    pytorch_utils.update_batch_norm_fn, update_batch_norm=update_batch_norm
                )
            )
        device = self.runtime.device
        with self._forward_context(model, mode):
            inputs, input_paddings = augmented_and_preprocessed_input_batch['inputs']
            logits, logit_paddings = model(
                inputs.to(device, non_blocking=True),
                input_paddings.to(device, non_blocking=True),
                dropout_rate=dropout_rate,
            )
        return (logits, logit_paddings), None

    # ---- loss and eval -------------------------------------------------------------------------
    def loss_fn(
        self,
        label_batch: tuple[spec.Tensor, spec.Tensor],
        logits_batch: tuple[spec.Tensor, spec.Tensor],
        mask_batch: spec.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, spec.Tensor]:
        """CTC loss per example (see `metrics.ctc_loss`); `label_smoothing` is ignored.

        As upstream, `n_valid_examples` counts target tokens when `mask_batch` is None
        (upstream uses the target lengths as the mask; its training batches carry no
        weights), and examples with weight and a non-empty target otherwise.

        Args:
          label_batch: (targets [B, L], target_paddings [B, L]).
          logits_batch: (logits [B, T, vocab], logit_paddings [B, T]).
          mask_batch: optional [B] example weights.
        """
        del label_smoothing
        targets, target_paddings = label_batch
        logits, logit_paddings = logits_batch
        return metrics.ctc_loss(targets, target_paddings, logits, logit_paddings, mask_batch)

    def greedy_decode(self, logits: spec.Tensor, logit_paddings: spec.Tensor):
        """([B, T] decoded ids, [B, T] paddings); see `metrics.greedy_decode`."""
        return metrics.greedy_decode(logits, logit_paddings)

    def _sync_state_dict(self, params) -> None:
        """Average every parameter and buffer across ranks (upstream's `sync_sd`)."""
        module = getattr(params, 'module', params)
        with torch.no_grad():
            for t in itertools.chain(module.parameters(), module.buffers()):
                if t.is_floating_point():
                    dist.all_reduce(t)
                    t.div_(self.runtime.world_size)

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
        """{'ctc_loss', 'wer'} over one pass of the split's batches.

        The real reader's queue knows its pass length (ceil(N / global_batch_size)
        global batches, the last padded with weight-0 examples, which are left out of
        the loss and WER); others (synthetic) get upstream's ceil(num_examples /
        global_batch_size). As upstream's eval (`loss_fn` without a mask), ctc_loss is
        per target token: summed loss / summed target lengths; wer = summed word errors /
        summed reference words; both over all ranks. Batches are evaluated in slices of
        at most `eval_examples_per_forward()` examples (memory-bounded eval).
        """
        del global_step
        if split not in self._eval_iters:
            self._eval_iters[split] = self._build_input_queue(
                rng, split, data_dir, global_batch_size=global_batch_size,
                num_examples=num_examples,
            )  # fmt: skip
        queue = self._eval_iters[split]
        if self.requires_sync_before_eval:
            self._sync_state_dict(params)
        totals = torch.zeros(5, dtype=torch.float64, device=self.runtime.device)
        for batch in self._one_pass(queue, num_examples, global_batch_size):
            totals += self._eval_in_chunks(
                lambda b: self._eval_batch(params, b, model_state, rng), batch
            )
        if self.runtime.distributed:
            dist.all_reduce(totals)
        loss_sum, tokens, word_errors, num_words, present = totals.tolist()
        self._eval_count(split, num_examples, present)
        # Upstream clamps each batch's token count at 1; real batches always have tokens.
        return {'ctc_loss': loss_sum / max(tokens, 1.0), 'wer': word_errors / num_words}

    def _eval_batch(self, params, batch: dict, model_state, rng) -> torch.Tensor:
        """float64 [summed loss, target tokens, word errors, reference words, examples] of
        one batch's real (weight > 0) examples."""
        device = self.runtime.device
        (logits, logit_paddings), _ = self.model_fn(
            params, batch, model_state, spec.ForwardPassMode.EVAL, rng, False
        )
        targets, target_paddings = batch['targets']
        # Upstream's eval calls loss_fn without a mask: the per-token normalisation.
        loss = self.loss_fn((targets, target_paddings), (logits, logit_paddings))
        tokens = (1 - target_paddings.to(device)).sum(dim=1).double()
        weights = batch.get('weights')
        if weights is not None:  # A padding copy may be infeasible for CTC: inf * 0.
            keep = weights.to(device) > 0
            loss_sum = torch.where(keep, loss['per_example'], 0.0).sum()
            tokens = torch.where(keep, tokens, 0.0)
            examples = keep.sum()
        else:
            loss_sum = loss['summed']
            examples = torch.tensor(len(tokens), device=device)
        decoded, decoded_paddings = self.greedy_decode(logits, logit_paddings)
        # The eval's host syncs: WER is computed on the host.
        host = [t.cpu().numpy() for t in (decoded, decoded_paddings, targets, target_paddings)]
        if weights is not None:
            real = weights.cpu().numpy() > 0
            host = [a[real] for a in host]
        word_errors, num_words = metrics.compute_wer(*host, self.detokenize)
        return torch.stack([
            loss_sum.double(),
            tokens.sum(),
            torch.tensor(word_errors, dtype=torch.float64, device=device),
            torch.tensor(num_words, dtype=torch.float64, device=device),
            examples.double(),
        ])  # fmt: skip

    # ---- data ----------------------------------------------------------------------------------
    def validate_data_dir(self, data_dir: str) -> None:
        """Fails before any log is written when the preprocessed layout is missing."""
        input_pipeline.validate(data_dir)

    def _build_input_queue(
        self,
        data_rng: spec.RandomState,
        split: str,
        data_dir: str,
        global_batch_size: int,
        cache: bool | None = None,
        repeat_final_dataset: bool | None = None,
        num_batches: int | None = None,
        num_examples: int | None = None,
    ) -> Iterator[dict]:
        """This rank's device batches: endless for train, one cycled pass for eval splits.

        Args:
          data_rng: its first word seeds the train shuffles and eval_train's subset.
          split: 'train', 'eval_train', 'validation' or 'test'.
          data_dir: upstream's preprocessed layout (see `input_pipeline.LAYOUT`).
          global_batch_size: examples per step over all ranks; each rank reads
            global_batch_size // world_size of them.
          cache, repeat_final_dataset, num_batches: upstream's arguments, unused.
          num_examples: examples an eval pass reads (default: the split; eval_train:
            `num_eval_train_examples`, as upstream's Subset).
        """
        del cache, repeat_final_dataset, num_batches
        n = global_batch_size // self.runtime.world_size
        rank, world = self.runtime.rank, self.runtime.world_size
        if not self._detokenize_fixed:
            self.detokenize = input_pipeline.Detokenizer(
                os.path.join(data_dir, input_pipeline.TOKENIZER_FILE)
            )
            self._detokenize_fixed = True
        ids = input_pipeline.split_ids(data_dir, split)
        seed = int(data_rng[0])
        if split == 'train':
            return input_pipeline.BatchQueue(
                data_dir,
                ids,
                lambda: (
                    (i, None) for i in input_pipeline.train_plan(len(ids), seed, n, rank, world)
                ),
                cycle=False,
                transform=self._on_device,
            )
        if split == 'eval_train':
            ids = input_pipeline.eval_train_ids(ids, seed, self.num_eval_train_examples)
        if num_examples is not None:
            ids = ids[:num_examples]
        if not ids:
            raise ValueError(f'{data_dir}: the {split} split has no examples')
        plan = input_pipeline.eval_plan(len(ids), n, rank, world)
        return input_pipeline.BatchQueue(
            data_dir, ids, lambda: iter(plan), cycle=True, transform=self._on_device,
            batches_per_pass=len(plan),
        )  # fmt: skip

    def _on_device(self, batch: dict) -> dict:
        """The batch's tensors on the workload's device (pinned first on CUDA)."""
        device = self.runtime.device
        pin = device.type == 'cuda'

        def move(t):
            return (t.pin_memory() if pin else t).to(device, non_blocking=pin)

        return {
            k: tuple(move(t) for t in v) if isinstance(v, tuple) else move(v)
            for k, v in batch.items()
        }

    def _build_synthetic_input_queue(
        self, data_rng: spec.RandomState, split: str, global_batch_size: int
    ) -> Iterator[dict]:
        """Endless device batches with upstream's layout: a few made once, then cycled.

        Audio: 16-bit-range integer samples (Gaussian, std 3000) over a random length
        between 40% and 100% of 320,000 samples, zero after it; targets: ids in
        [1, 1024) over a random length between 16 and 128 (feasible for CTC on the
        ~500 output frames), zero after it.
        """
        del split
        n = global_batch_size // self.runtime.world_size
        gen = torch.Generator().manual_seed(int(data_rng[0]) + self.runtime.rank)
        device = self.runtime.device
        pool = []
        for _ in range(_SYNTHETIC_POOL):
            batch = synthetic_batch(n, gen)
            pool.append({
                k: tuple(t.to(device) for t in v) for k, v in batch.items()
            })  # fmt: skip
        return itertools.cycle(pool)


def synthetic_batch(
    n: int,
    gen: torch.Generator,
    num_samples: int = MAX_INPUT_LENGTH,
    num_targets: int = MAX_TARGET_LENGTH,
    min_target: int = 16,
    max_target: int = 128,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """One CPU batch in upstream's layout (see the queue's docstring)."""
    audio_len = torch.randint(int(0.4 * num_samples), num_samples + 1, (n,), generator=gen)
    audio_paddings = (torch.arange(num_samples)[None, :] >= audio_len[:, None]).float()
    audio = (torch.randn(n, num_samples, generator=gen) * 3000).round().clamp(-32768, 32767)
    audio = audio * (1 - audio_paddings)
    target_len = torch.randint(min_target, max_target + 1, (n,), generator=gen)
    target_paddings = (torch.arange(num_targets)[None, :] >= target_len[:, None]).float()
    targets = torch.randint(1, VOCAB_SIZE, (n, num_targets), generator=gen).float()
    targets = targets * (1 - target_paddings)
    return {'inputs': (audio, audio_paddings), 'targets': (targets, target_paddings)}


class LibriSpeechConformerAttentionTemperatureWorkload(LibriSpeechConformerWorkload):
    """Attention outputs times 1.6."""

    workload_spec = LIBRISPEECH_CONFORMER_ATTENTION_TEMPERATURE


class LibriSpeechConformerLayerNormWorkload(LibriSpeechConformerWorkload):
    """No LayerNorm after each Conformer block."""

    workload_spec = LIBRISPEECH_CONFORMER_LAYERNORM


class LibriSpeechConformerGeluWorkload(LibriSpeechConformerWorkload):
    """GELU instead of swish (tanh approximation in FF modules, exact in conv modules)."""

    workload_spec = LIBRISPEECH_CONFORMER_GELU
