"""WMT de->en Transformer in PyTorch: the base workload and upstream's three variants.

Upstream: `algoperf/workloads/wmt/workload.py` (base class) and `wmt_pytorch/workload.py`
(snapshot 2c90454). Kept as upstream: the model (`models.py`; `model_fn` takes the
dropout rate, default 0.1, and passes the packing keys when the batch has them), the
label-smoothed cross entropy masked by `weights` (per-token losses [B, L];
`n_valid_examples` counts target tokens), `is_output_params` (the shared embedding),
the eval metrics (`loss` and `accuracy` per target token, normalised by the summed
weights of every rank; `bleu` from beam search, beam 4, alpha 0.6, 256 positions, over
the same batches, counting only rows whose first target weight is set, with upstream's
token truncation after the first EOS) and the batch layout below. Constants (targets,
budgets, sizes, model switches) come from `spec.py`.

Batches (per device, n = global_batch_size // world_size, all int64 [n, 256]):
train: `inputs`, `inputs_position`, `inputs_segmentation`, `targets`,
`targets_position`, `targets_segmentation`, `weights` (sequence pairs packed into rows;
segment ids from 1, positions restart per segment, 0 = padding); eval splits: `inputs`,
`targets`, `weights` (one padded pair per row). `weights = targets > 0`.

Speed (ours): attention runs through `F.scaled_dot_product_attention` with boolean
masks broadcast over heads (`use_sdpa`, default on); upstream's per-head float masks
are the reference path (`use_sdpa=False`), parity-tested. Decoding caches the
cross-attention keys/values once per batch.

Real data: `input_pipeline.py` reads the token arrays `algoperf data wmt` (`convert.py`)
writes from the parallel text, with upstream's length filter, packing and padding; each
rank builds its own slice of every global batch. Building a queue loads the SentencePiece
model into `_tokenizer` and its decoder into `_detokenize` (BLEU). Eval queues hold one
pass (`batches_per_pass` = ceil(num_examples / global batch)) on the device and cycle it:
the loss pass and BLEU's decoding pass read the same batches, as upstream's repeated
`take`. `algoperf profile` can also run on `_build_synthetic_input_queue`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F

from algoperf import spec
from algoperf.workload_base import EvalPass, SpecWorkload
from workloads.wmt import bleu, decode, input_pipeline, models
from workloads.wmt.spec import WMT, WMT_ATTENTION_TEMP, WMT_GLU_TANH, WMT_POST_LN

VOCAB_SIZE = input_pipeline.VOCAB_SIZE  # 32,000; the reader checks token ids against it.
SEQ_LEN = 256  # Packed / padded length of every batch row.
MAX_PREDICT_LENGTH = 256  # Upstream's decode length for BLEU.
_SYNTHETIC_POOL = 4  # Distinct synthetic batches, cycled.


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The `Transformer` inside DDP and/or torch.compile wrappers."""
    while True:
        if hasattr(model, '_orig_mod'):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def ids_to_text(ids) -> str:
    """Fallback detokenizer without a SentencePiece model: the ids, space separated,
    without padding and EOS (SentencePiece drops those control ids too)."""
    return ' '.join(str(int(t)) for t in ids if int(t) not in (0, decode.EOS_ID))


class WmtWorkload(SpecWorkload):
    """Transformer on WMT17 de->en (upstream `WmtWorkload`).

    Args:
      runtime: device, rank and world size (default: from the environment).
      use_sdpa: attention through SDPA with boolean masks (default True); False runs
        upstream's float-mask attention math.
    """

    workload_spec = WMT
    max_predict_length = MAX_PREDICT_LENGTH
    # BLEU's beam search dominates: 4 beams x 6 decoder layers x 2 (k, v) x 256 x 1,024
    # float32 cache entries (~50 MB) plus the 32k-vocab logits per sentence.
    eval_bytes_per_example = 64 << 20

    def __init__(self, runtime=None, use_sdpa: bool | None = None, **kwargs) -> None:
        super().__init__(runtime=runtime, **kwargs)
        self.use_sdpa = True if use_sdpa is None else use_sdpa
        # Token ids -> text for BLEU; the real reader sets SentencePiece's decoder.
        self._tokenizer = None
        self._detokenize: Callable = ids_to_text

    # ---- model ---------------------------------------------------------------------------------
    def _build_model(self) -> torch.nn.Module:
        """The model on the current default device (use `torch.device('meta')` to count)."""
        extra = self.workload_spec.extra
        return models.Transformer(
            ntoken=VOCAB_SIZE,
            activation=extra['activation'],
            glu=extra['glu'],
            attention_temp=extra['attention_temp'],
            pre_ln=extra['pre_ln'],
            use_sdpa=self.use_sdpa,
        )

    def is_output_params(self, param_key: spec.ParameterKey) -> bool:
        return param_key == 'shared_embedding.weight'

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
        """Batch -> ([B, L, 32000] logits, None); no_grad in EVAL."""
        del model_state, rng, update_batch_norm
        batch = augmented_and_preprocessed_input_batch
        model = params
        with self._forward_context(model, mode):
            logits = model(
                src=batch['inputs'],
                tgt=batch['targets'],
                inputs_positions=batch.get('inputs_position'),
                targets_positions=batch.get('targets_position'),
                inputs_segmentation=batch.get('inputs_segmentation'),
                targets_segmentation=batch.get('targets_segmentation'),
                dropout_rate=dropout_rate,
            )
        return logits, None

    # ---- loss ----------------------------------------------------------------------------------
    def loss_fn(
        self,
        label_batch: spec.Tensor,
        logits_batch: spec.Tensor,
        mask_batch: spec.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, spec.Tensor]:
        """Per-token label-smoothed cross entropy, masked (no regularisation, not synced).

        Args:
          label_batch: [B, L] target ids.
          logits_batch: [B, L, vocab].
          mask_batch: [B, L] weights (0/1); None means every token counts.
          label_smoothing: torch's `label_smoothing` (uniform over the vocabulary).

        Returns:
          {'summed': scalar, 'n_valid_examples': weights.sum() (tokens), 'per_example':
          [B, L] losses, 0 where masked}.
        """
        if logits_batch.ndim != label_batch.ndim + 1:
            raise ValueError(
                f'Incorrect shapes. Got shape {logits_batch.shape} logits and '
                f'{label_batch.shape} targets.'
            )
        per_token = F.cross_entropy(
            logits_batch.reshape(-1, logits_batch.shape[-1]),
            label_batch.reshape(-1),
            reduction='none',
            label_smoothing=label_smoothing,
        ).view(label_batch.shape)
        if mask_batch is None:
            mask_batch = torch.ones_like(label_batch)
        per_token = torch.where(mask_batch.to(torch.bool), per_token, 0.0)
        return {
            'summed': per_token.sum(),
            'n_valid_examples': mask_batch.sum(),
            'per_example': per_token,
        }

    # ---- eval ----------------------------------------------------------------------------------
    def _eval_sums(self, params, batch: dict[str, spec.Tensor]) -> torch.Tensor:
        """[summed loss, correct tokens, weight sum] of one batch (float64, on the device)."""
        logits, _ = self.model_fn(params, batch, None, spec.ForwardPassMode.EVAL, None, False)
        targets, weights = batch['targets'], batch['weights']
        loss = self.loss_fn(targets, logits, weights, 0.0)['summed']
        correct = ((logits.argmax(-1) == targets) * weights).sum()
        return torch.stack([loss.double(), correct.double(), weights.sum().double()])

    @torch.no_grad()
    def predict_step(
        self,
        inputs: spec.Tensor,
        params: spec.ParameterContainer,
        eos_id: int = decode.EOS_ID,
        max_decode_len: int = MAX_PREDICT_LENGTH,
        beam_size: int = decode.BEAM_SIZE,
    ) -> spec.Tensor:
        """Beam-search translations [B, max_decode_len - 1] (best beam, start token dropped)."""
        model = _unwrap(params)
        model.eval()
        memory = torch.repeat_interleave(model.encoder(inputs), beam_size, dim=0)
        raw_inputs = torch.repeat_interleave(inputs, beam_size, dim=0)
        decoder = model.decoder
        seqs, _ = decode.beam_search(
            inputs.shape[0],
            decoder.decode_step,
            decoder.init_cache(memory, raw_inputs, max_decode_len),
            beam_size=beam_size,
            alpha=decode.ALPHA,
            eos_id=eos_id,
            max_decode_len=max_decode_len,
            reorder_cache=decoder.reorder_cache,
            device=inputs.device,
        )
        return seqs[:, -1, 1:]

    def _decode_tokens(self, toks) -> str:
        """Upstream's truncation: up to and including the first EOS (only the first token
        when there is none), then detokenize."""
        toks = toks.tolist() if torch.is_tensor(toks) else list(toks)
        end = toks.index(decode.EOS_ID) + 1 if decode.EOS_ID in toks else 1
        return self._detokenize(toks[:end])

    def translate_and_calculate_bleu(
        self, params, ds_iter: Iterator, num_batches: int, max_predict_length: int
    ) -> float:
        """Decode `num_batches` batches of `ds_iter` and score them against their targets."""
        references, predictions = [], []
        for _ in range(num_batches):
            batch = next(ds_iter)
            # Beam search keeps 4 beams' caches: decoded in slices (memory-bounded eval).
            predicted = self._eval_in_chunks(
                lambda b: self.predict_step(b['inputs'], params, decode.EOS_ID, max_predict_length),
                batch,
                combine=torch.cat,
            ).cpu()
            targets = batch['targets'].cpu()
            weights = batch.get('weights')
            # Rows past the real examples are all-padding (weight 0 at position 0).
            n = int(weights[:, 0].sum()) if weights is not None else len(predicted)
            for idx in range(n):
                references.append(self._decode_tokens(targets[idx]))
                predictions.append(self._decode_tokens(predicted[idx]))
        return bleu.corpus_bleu(predictions, [references], reduce_fn=self._sum_over_ranks).score

    def _sum_over_ranks(self, stats: list[int]) -> list[int]:
        if not self.runtime.distributed:
            return stats
        tensor = torch.tensor(stats, dtype=torch.int64, device=self.runtime.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

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
        """{'loss', 'accuracy', 'bleu'} over ceil(num_examples / global_batch_size) batches;
        BLEU decodes the next as many batches of the same (repeating) iterator, as upstream."""
        del model_state, global_step
        num_batches = math.ceil(num_examples / global_batch_size)
        if split not in self._eval_iters:
            self._eval_iters[split] = self._build_input_queue(
                rng, split, data_dir, global_batch_size, num_batches, repeat_final_dataset=True
            )
        queue = self._eval_iters[split]
        # The real reader's pass is shorter when the split has fewer (kept) pairs.
        num_batches = getattr(queue, 'batches_per_pass', num_batches)
        self._eval_count(split, num_examples, getattr(queue, 'num_examples', None))
        totals = torch.zeros(3, dtype=torch.float64, device=self.runtime.device)
        for _ in range(num_batches):
            totals += self._eval_in_chunks(lambda b: self._eval_sums(params, b), next(queue))
        if self.runtime.distributed:
            dist.all_reduce(totals)
        loss, correct, denominator = totals.tolist()
        return {
            'loss': loss / denominator,
            'accuracy': correct / denominator,
            'bleu': self.translate_and_calculate_bleu(
                params, queue, num_batches, self.max_predict_length
            ),
        }

    # ---- data ----------------------------------------------------------------------------------
    def validate_data_dir(self, data_dir: str) -> None:
        """Fails before any log is written when the converted data or its model is missing."""
        for split in input_pipeline.SPLITS:
            input_pipeline.load_split(data_dir, split)
        self._load_tokenizer(data_dir)

    def _load_tokenizer(self, data_dir: str) -> None:
        """SentencePiece from `<data_dir>/wmt_sentencepiece_model` as `_tokenizer`, its
        decoder as `_detokenize`."""
        sp = input_pipeline.load_tokenizer(data_dir)
        if sp.get_piece_size() > VOCAB_SIZE or sp.eos_id() != decode.EOS_ID:
            raise input_pipeline.DataError(
                f'{data_dir}/{input_pipeline.VOCAB_FILE}: vocabulary {sp.get_piece_size()} '
                f'(at most {VOCAB_SIZE}) and eos id {sp.eos_id()} (must be {decode.EOS_ID})'
            )
        self._tokenizer = sp
        size, unk = sp.get_piece_size(), sp.unk_id()

        def detokenize(ids) -> str:
            # Ids past a smaller vocabulary (a test model) read as unk.
            return sp.decode([int(t) if int(t) < size else unk for t in ids])

        self._detokenize = detokenize

    def _build_input_queue(
        self,
        data_rng: spec.RandomState,
        split: str,
        data_dir: str,
        global_batch_size: int,
        num_batches: int | None = None,
        repeat_final_dataset: bool = False,
        num_examples: int | None = None,
    ) -> Iterator[dict[str, spec.Tensor]]:
        """This rank's device batches: endless packed train rows, or one cycled eval pass.

        Args:
          data_rng: its first word seeds the train shuffle and eval_train's subset.
          split: 'train', 'eval_train', 'validation' or 'test'.
          data_dir: as `algoperf data wmt` writes it.
          global_batch_size: rows; each rank takes its global // world_size rows.
          num_batches: eval global batches per pass (upstream's `take`; default: the
            whole split).
          repeat_final_dataset: upstream's argument, unused (eval passes always cycle).
          num_examples: eval pairs per pass, instead of num_batches * global_batch_size.
        """
        del repeat_final_dataset
        self._load_tokenizer(data_dir)
        pairs = input_pipeline.load_split(data_dir, split)
        seed = int(data_rng[0])
        rank, world = self.runtime.rank, self.runtime.world_size
        if split == 'train':
            return self._on_device(
                input_pipeline.train_batches(pairs, seed, global_batch_size, rank, world)
            )
        if num_examples is None and num_batches is not None:
            num_examples = num_batches * global_batch_size
        ids = input_pipeline.eval_ids(pairs, split, seed, num_examples)
        batches = input_pipeline.eval_batches(pairs, ids, global_batch_size, rank, world)
        return EvalPass(list(self._on_device(batches)), num_examples=len(ids))

    def _on_device(self, batches) -> Iterator[dict[str, spec.Tensor]]:
        for batch in batches:
            yield {k: self._to_device(v) for k, v in batch.items()}

    def _build_synthetic_input_queue(
        self, data_rng: spec.RandomState, split: str, global_batch_size: int
    ) -> Iterator[dict[str, spec.Tensor]]:
        """Endless device batches with the real keys, shapes and dtypes: a few made once,
        then cycled.

        Sentence pairs have 4-64 tokens per side (ids 3..31999, EOS-terminated); train rows
        pack pairs while both sides fit in 256 tokens (as upstream's packing), eval rows
        hold one padded pair.

        Args:
          data_rng: its first word (plus the rank) seeds the generator.
          split: 'train' (packed) or an eval split.
          global_batch_size: rows; divided by the world size.
        """
        n = global_batch_size // self.runtime.world_size
        gen = torch.Generator().manual_seed(int(data_rng[0]) + self.runtime.rank)
        device = self.runtime.device
        make = synthetic_train_batch if split == 'train' else synthetic_eval_batch
        pool = [{k: v.to(device) for k, v in make(n, gen).items()} for _ in range(_SYNTHETIC_POOL)]
        return itertools.cycle(pool)


def _sentence(gen: torch.Generator, max_len: int = 64) -> torch.Tensor:
    length = int(torch.randint(4, max_len + 1, (), generator=gen))
    tokens = torch.randint(3, VOCAB_SIZE, (length,), generator=gen)
    tokens[-1] = decode.EOS_ID
    return tokens


def synthetic_eval_batch(n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """n rows of one padded (inputs, targets) pair each, with `weights`."""
    batch = {k: torch.zeros(n, SEQ_LEN, dtype=torch.long) for k in ('inputs', 'targets')}
    for row in range(n):
        for key in ('inputs', 'targets'):
            s = _sentence(gen)
            batch[key][row, : len(s)] = s
    batch['weights'] = (batch['targets'] > 0).long()
    return batch


def synthetic_train_batch(n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """n packed rows: pairs appended while both sides fit, with segment ids and positions."""
    batch = {k: torch.zeros(n, SEQ_LEN, dtype=torch.long) for k in input_pipeline.TRAIN_KEYS}
    for row in range(n):
        used = {'inputs': 0, 'targets': 0}
        segment = 1
        while True:
            pair = {'inputs': _sentence(gen), 'targets': _sentence(gen)}
            if any(used[k] + len(s) > SEQ_LEN for k, s in pair.items()):
                break
            for key, s in pair.items():
                start, end = used[key], used[key] + len(s)
                batch[key][row, start:end] = s
                batch[f'{key}_position'][row, start:end] = torch.arange(len(s))
                batch[f'{key}_segmentation'][row, start:end] = segment
                used[key] = end
            segment += 1
    batch['weights'] = (batch['targets'] > 0).long()
    return batch


class WmtWorkloadPostLN(WmtWorkload):
    """LayerNorm after each residual sum, no final encoder/decoder norms."""

    workload_spec = WMT_POST_LN


class WmtWorkloadAttentionTemp(WmtWorkload):
    """Queries scaled by an attention temperature of 4.0."""

    workload_spec = WMT_ATTENTION_TEMP


class WmtWorkloadGLUTanH(WmtWorkload):
    """GLU feed-forward blocks with tanh activations."""

    workload_spec = WMT_GLU_TANH
