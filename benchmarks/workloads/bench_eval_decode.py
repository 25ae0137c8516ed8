"""Eval decoding throughput: WMT beam search and LibriSpeech greedy CTC decoding + WER.

Run (from the repository root, on a quiet machine)::

    python -m pytest benchmarks/workloads/bench_eval_decode.py \
        --benchmark-json=benchmarks/results/eval_decode_<hw>_<yyyymmdd>.json

wmt_beam_search: the full WMT Transformer (133.5M parameters, random init) translating 4
source sentences of 32 tokens with beam 4 and alpha 0.6, 32 decode steps (an untrained
model rarely emits EOS, so every step runs: the worst case per sentence). Providers:
    kv_cache: `WmtWorkload.predict_step` as the eval runs it: self-attention keys and values
        cached, the memory's cross-attention keys and values computed once, beam reordering
        copies only the generated prefix.
    full_gather (peer): the same search with upstream's cache handling: the whole cache
        (self-attention buffers and the memory's keys/values) gathered at every step.

ctc_greedy_wer: 256 utterances (LibriSpeech's eval batch) of 499 frames (20 s of audio
after the 4x subsampling) x 1,024 logits, 40-100% real, against random 40-120-token
references: greedy CTC decoding, then word errors. Providers:
    batched: `metrics.greedy_decode` (the whole batch on the device, no host sync) then
        `metrics.compute_wer` (edit distances of all pairs at once, vectorised numpy).
    per_utterance (peer): upstream's shape of the work: per utterance the argmax path,
        `unique_consecutive` and blank removal (small ops, a host sync each), then a
        word-level Levenshtein DP in Python per (hypothesis, reference) pair.
Both give the same word errors and word counts (asserted).
"""

import pytest
import torch
from _harness import rounds

from algoperf import registry
from algoperf.runtime import Runtime
from workloads.librispeech_conformer import metrics
from workloads.wmt import decode

ROUNDS = {'wmt_beam_search': 3, 'ctc_greedy_wer': 10}


@pytest.fixture(scope='module')
def wmt():
    workload = registry.get_workload('wmt', runtime=Runtime(torch.device('cpu')))
    model, _ = workload.init_model_fn([0, 0])
    model.eval()
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(3, 32_000, (4, 32), generator=g)
    return workload, model, inputs


@pytest.mark.parametrize('provider', ['kv_cache', 'full_gather'])
def test_wmt_beam_search(benchmark, wmt, provider):
    workload, model, inputs = wmt
    original = model.decoder.reorder_cache
    if provider == 'full_gather':
        model.decoder.reorder_cache = decode.gather_cache
    benchmark.group = 'wmt_beam_search_4x32'
    benchmark.extra_info.update(device='cpu', peer='full_gather', items=4, item_unit='sentence')
    try:
        benchmark.pedantic(
            workload.predict_step, args=(inputs, model), kwargs={'max_decode_len': 33},
            rounds=rounds(ROUNDS['wmt_beam_search']), warmup_rounds=1,
        )  # fmt: skip
    finally:
        model.decoder.reorder_cache = original


def _ctc_batch():
    g = torch.Generator().manual_seed(0)
    b, t, vocab = 256, 499, 1024
    # Peaked logits, blank-heavy like a trained model's, so decoded lengths are realistic.
    logits = torch.randn(b, t, vocab, generator=g)
    logits[:, :, 0] += 3.0
    lengths = torch.randint(int(0.4 * t), t + 1, (b,), generator=g)
    paddings = (torch.arange(t)[None] >= lengths[:, None]).float()
    target_len = torch.randint(40, 121, (b,), generator=g)
    targets = torch.randint(1, vocab, (b, 256), generator=g)
    target_paddings = (torch.arange(256)[None] >= target_len[:, None]).float()
    return logits, paddings, targets * (1 - target_paddings).long(), target_paddings


def _per_utterance(logits, paddings):
    out = torch.zeros(logits.shape[:2], dtype=torch.long)
    for i in range(logits.shape[0]):
        n = int((paddings[i] == 0).sum())  # Host sync.
        path = torch.unique_consecutive(logits[i, :n].argmax(-1))
        path = path[path != metrics.BLANK_ID]
        out[i, : len(path)] = path
    return out, (out == metrics.BLANK_ID).float()


def _wer_per_pair(decoded, decoded_paddings, targets, target_paddings):
    errors, words = 0.0, 0.0
    for i in range(len(targets)):
        hyp = metrics.token_ids_to_text(decoded[i][decoded_paddings[i] == 0])
        ref = metrics.token_ids_to_text(targets[i][target_paddings[i] == 0])
        errors += metrics.edit_distance(hyp, ref)
        words += len(ref.split(' '))
    return errors, words


@pytest.mark.parametrize('provider', ['batched', 'per_utterance'])
def test_ctc_greedy_wer(benchmark, provider):
    logits, paddings, targets, target_paddings = _ctc_batch()
    decoder = metrics.greedy_decode if provider == 'batched' else _per_utterance
    wer = metrics.compute_wer if provider == 'batched' else _wer_per_pair

    def run():
        decoded, decoded_paddings = decoder(logits, paddings)
        return wer(
            decoded.numpy(), decoded_paddings.numpy(), targets.numpy(), target_paddings.numpy()
        )

    decoded, decoded_paddings = _per_utterance(logits, paddings)
    reference = _wer_per_pair(
        decoded.numpy(), decoded_paddings.numpy(), targets.numpy(), target_paddings.numpy()
    )
    assert run() == reference  # Same word errors and word counts.
    benchmark.group = 'ctc_greedy_wer_256x499'
    benchmark.extra_info.update(
        device='cpu', peer='per_utterance', items=256, item_unit='utterance'
    )
    benchmark.pedantic(run, rounds=rounds(ROUNDS['ctc_greedy_wer']), warmup_rounds=1)
