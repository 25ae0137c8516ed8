"""Conformer, DeepSpeech and WMT Transformer training steps: our fast paths vs upstream's choices.

Run (from the repository root, on a quiet machine; ~4 GB of memory)::

    python -m pytest benchmarks/workloads/bench_speech_wmt_step.py \
        --benchmark-json=benchmarks/results/speech_wmt_step_<hw>_<yyyymmdd>.json

One round = ``zero_grad()``, the workload's ``model_fn`` (TRAIN, dropout 0.1) and
``loss_fn``, the summed loss over its valid count, backward, one NAdamW step, on one
synthetic batch with upstream's layout (`_build_synthetic_input_queue`): LibriSpeech
2 utterances padded to 320,000 samples (40-100% real), WMT 2 packed rows of 256
tokens. Full-size models (32.3M / 18.4M / 133.5M parameters), same weights per pair.

Providers and their peers (upstream's choices, same math):
    conformer_sdpa vs conformer_math: SDPA with a boolean key-padding mask vs explicit
        softmax(q k^T) v with a float mask (upstream forces the math kernel).
    deepspeech_nosync vs deepspeech_packed: each LSTM direction over padded sequences
        with lengths on the device vs upstream's `pack_padded_sequence` path (host syncs).
    wmt_sdpa vs wmt_float_masks: boolean segment/causal masks broadcast over heads into
        SDPA vs upstream's per-head float masks and explicit attention.
"""

import pytest
import torch
from _harness import rounds

from algoperf import registry, spec
from algoperf.runtime import Runtime
from submissions.optimizers.nadamw import NAdamW

BATCH = 2
ROUNDS = 3
PROVIDERS = {
    'conformer_sdpa': ('librispeech_conformer', {'use_sdpa': True}, 'conformer_math'),
    'conformer_math': ('librispeech_conformer', {'use_sdpa': False}, None),
    'deepspeech_nosync': (
        'librispeech_deepspeech',
        {'use_packed_lstm': False},
        'deepspeech_packed',
    ),
    'deepspeech_packed': ('librispeech_deepspeech', {'use_packed_lstm': True}, None),
    'wmt_sdpa': ('wmt', {'use_sdpa': True}, 'wmt_float_masks'),
    'wmt_float_masks': ('wmt', {'use_sdpa': False}, None),
}


@pytest.mark.parametrize('provider', list(PROVIDERS))
def test_train_step(benchmark, provider):
    name, options, peer = PROVIDERS[provider]
    workload = registry.get_workload(name, runtime=Runtime(torch.device('cpu')), **options)
    model, state = workload.init_model_fn([0, 0])
    opt = NAdamW(model.parameters(), lr=1e-3, betas=(0.95, 0.998), weight_decay=0.08)
    batch = next(workload._build_synthetic_input_queue([0, 1], 'train', BATCH))

    def step():
        opt.zero_grad()
        logits, _ = workload.model_fn(
            model, batch, state, spec.ForwardPassMode.TRAIN, [0, 0], True, 0.1
        )
        loss = workload.loss_fn(batch['targets'], logits, batch.get('weights'))
        (loss['summed'] / loss['n_valid_examples']).backward()
        opt.step()

    benchmark.group = f'{name}_step_b{BATCH}'
    benchmark.extra_info.update(
        device='cpu', peer=peer or provider, items=BATCH, item_unit='example'
    )
    benchmark.pedantic(step, rounds=rounds(ROUNDS), warmup_rounds=1, iterations=1)
