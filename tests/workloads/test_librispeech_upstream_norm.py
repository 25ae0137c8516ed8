"""LibriSpeech loss normalisation, eval ctc_loss and state_dict keys as upstream (issue #16.7).

Upstream's PyTorch `loss_fn` (librispeech_pytorch/workload.py, v0.6):

    per_example = CTCLoss(blank=0, reduction='none')(log_softmax(logits), targets,
                                                      input_lengths, target_lengths)
    if mask_batch is not None:
        per_example *= mask_batch
        mask_batch = logical_and(mask_batch, target_lengths)
    else:
        mask_batch = target_lengths
    n_valid_examples = max(mask_batch.sum(), 1)

and its eval calls `loss_fn` without a mask and reports sum(summed) / sum(n_valid): the
CTC loss per target token. The references below are written from that formula with
`F.ctc_loss` on each unpadded example. Upstream's model keeps the frontend constants as
persistent buffers: `preprocessor.stft.window` [1, 1, 400, 1] (a periodic Hann window
of 400) and `preprocessor._normalizer_mean` / `_normalizer_stddev` [1, 1, 80, 1].
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from algoperf import registry
from algoperf.runtime import Runtime
from workloads.librispeech_conformer import preprocessor
from workloads.librispeech_conformer import workload as conformer

CPU = Runtime(torch.device('cpu'))
NAMES = ('librispeech_conformer', 'librispeech_deepspeech')
SMALL = {
    'librispeech_conformer': {'encoder_dim': 32, 'num_attention_heads': 4, 'num_encoder_layers': 2,
                              'vocab_size': 16},
    'librispeech_deepspeech': {'encoder_dim': 32, 'num_lstm_layers': 2, 'num_ffn_layers': 2,
                               'vocab_size': 16},
}


def _small(name, seed=0):
    wl = registry.get_workload(name, runtime=CPU)
    torch.manual_seed(seed)
    return wl, wl._place_model(wl._build_model(**SMALL[name]))


def _batch(n, seed):
    gen = torch.Generator().manual_seed(seed)
    batch = conformer.synthetic_batch(n, gen, num_samples=16_000, num_targets=12, min_target=3,
                                      max_target=10)
    targets, paddings = batch['targets']
    batch['targets'] = ((targets % 15 + 1) * (1 - paddings), paddings)
    return batch


def _upstream_per_example(targets, target_paddings, logits, logit_paddings):
    """CTC loss of each example alone (float64), from the unpadded lengths."""
    out = []
    for b in range(len(targets)):
        t_len = int((1 - target_paddings[b]).sum())
        l_len = int((1 - logit_paddings[b]).sum())
        lp = torch.log_softmax(logits[b : b + 1, :l_len].double(), -1).transpose(0, 1)
        out.append(F.ctc_loss(lp, targets[b : b + 1, :t_len].long(), [l_len], [t_len], reduction='sum'))
    return torch.stack(out)


def test_loss_fn_counts_tokens_without_a_mask_and_examples_with_one():
    wl = registry.get_workload('librispeech_conformer', runtime=CPU)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 14, 7, generator=g, dtype=torch.float64)
    logit_paddings = torch.zeros(4, 14, dtype=torch.float64)
    logit_paddings[2, 10:] = 1
    lengths = torch.tensor([5, 3, 0, 2])
    targets = (torch.arange(1, 6).repeat(4, 1) * (torch.arange(5) < lengths[:, None])).double()
    target_paddings = (torch.arange(5) >= lengths[:, None]).double()
    per_example = _upstream_per_example(targets, target_paddings, logits, logit_paddings)

    out = wl.loss_fn((targets, target_paddings), (logits, logit_paddings))
    assert out['n_valid_examples'].item() == max(int(lengths.sum()), 1) == 10  # Tokens.
    torch.testing.assert_close(out['summed'], per_example.sum(), rtol=1e-10, atol=0)

    mask = torch.tensor([1.0, 0.0, 1.0, 1.0])
    masked = wl.loss_fn((targets, target_paddings), (logits, logit_paddings), mask)
    # Examples with weight and a non-empty target: 0 and 3 (2 has no target).
    assert masked['n_valid_examples'].item() == 2
    torch.testing.assert_close(masked['summed'], (per_example * mask).sum(), rtol=1e-10, atol=0)


@pytest.mark.parametrize('name', NAMES)
def test_eval_ctc_loss_is_per_token_over_the_real_examples(name):
    wl, model = _small(name)
    batches = [_batch(4, seed) for seed in (3, 4)]
    batches[1]['weights'] = torch.tensor([1.0, 1.0, 0.0, 0.0])  # Two padding copies.
    wl._eval_iters['validation'] = iter(batches)
    result = wl._eval_model_on_split('validation', 6, 4, model, None, np.array([0, 1]), '')

    loss_sum, tokens = 0.0, 0.0
    for batch in batches:
        with torch.no_grad():
            model.eval()
            logits, logit_paddings = model(*batch['inputs'], dropout_rate=0.0)
        targets, target_paddings = batch['targets']
        keep = batch.get('weights', torch.ones(4)) > 0
        per_example = _upstream_per_example(targets, target_paddings, logits, logit_paddings)
        loss_sum += per_example[keep].sum().item()
        tokens += (1 - target_paddings[keep]).sum().item()
    assert result['ctc_loss'] == pytest.approx(loss_sum / tokens, rel=1e-5)


@pytest.mark.parametrize('name', NAMES)
def test_chunked_eval_equals_the_unchunked_one(name):
    results = []
    for cap in (None, 3):
        wl, model = _small(name)
        wl.eval_max_examples_per_forward = cap
        batches = [_batch(8, 5), _batch(8, 6)]
        batches[1]['weights'] = torch.tensor([1.0] * 5 + [0.0] * 3)
        wl._eval_iters['validation'] = iter(batches)
        results.append(wl._eval_model_on_split('validation', 13, 8, model, None, np.array([0, 1]), ''))
    assert results[1]['ctc_loss'] == pytest.approx(results[0]['ctc_loss'], rel=1e-5)
    assert results[1]['wer'] == results[0]['wer']  # Integer counts: exact.


def _upstream_frontend_buffers():
    mean = torch.tensor(preprocessor.LIBRISPEECH_MEAN_VECTOR, dtype=torch.float32)
    std = torch.tensor(preprocessor.LIBRISPEECH_STD_VECTOR, dtype=torch.float32)
    return {
        'preprocessor.stft.window': torch.hann_window(400, periodic=True).reshape(1, 1, 400, 1),
        'preprocessor._normalizer_mean': mean[None, None, :, None],
        'preprocessor._normalizer_stddev': std[None, None, :, None],
    }


@pytest.mark.parametrize('name', NAMES + ('librispeech_deepspeech_norm_and_spec_aug',))
def test_upstreams_state_dict_loads_strictly(name):
    wl = registry.get_workload(name, runtime=CPU)
    with torch.device('meta'):
        layout = wl._build_model()
    # Upstream's key set: the parameters (their names are checked against upstream's in
    # test_librispeech_models.py) and batch-norm/subsampling buffers the models share with
    # it, plus the three persistent frontend buffers.
    frontend = _upstream_frontend_buffers()
    model_buffers = {k for k, _ in layout.named_buffers() if not k.startswith('preprocessor.')}
    expected_keys = {k for k, _ in layout.named_parameters()} | model_buffers | set(frontend)
    assert set(layout.state_dict()) == expected_keys
    for key, value in frontend.items():
        assert tuple(layout.state_dict()[key].shape) == tuple(value.shape), key

    source = registry.get_workload(name, runtime=CPU)._build_model(**SMALL[name.split('_norm')[0]])
    upstream_sd = {k: v for k, v in source.state_dict().items() if not k.startswith('preprocessor.')}
    upstream_sd.update(frontend)
    target = registry.get_workload(name, runtime=CPU)._build_model(**SMALL[name.split('_norm')[0]])
    target.load_state_dict(upstream_sd, strict=True)
    for key, value in frontend.items():
        torch.testing.assert_close(target.state_dict()[key], value, rtol=0, atol=0)
    # And a state_dict saved without them (before they were persistent) still loads strictly.
    target.load_state_dict({k: v for k, v in upstream_sd.items() if k not in frontend}, strict=True)


def test_frontend_output_is_unchanged_by_the_buffer_layout():
    frontend = preprocessor.MelFilterbankFrontend()
    g = torch.Generator().manual_seed(0)
    audio = (torch.randn(2, 8_000, generator=g) * 3000).round()
    paddings = torch.zeros(2, 8_000)
    paddings[1, 5_000:] = 1
    out, _ = frontend(audio, paddings)
    # The same computation with upstream's [1, 1, n, 1] buffers broadcast explicitly.
    pcm = (audio * (1 - paddings) * 2.0**-15).unfold(1, 401, 160)
    pre = torch.cat([pcm[..., :1] * 0.03, pcm[..., 1:-1] - 0.97 * pcm[..., :-2]], dim=-1)
    buffers = _upstream_frontend_buffers()
    spectrum = torch.fft.rfft(pre * buffers['preprocessor.stft.window'][0, 0, :, 0], 512, dim=-1)
    logmel = torch.log(torch.matmul(spectrum.abs() ** 2, frontend.mel_weights).clamp(min=1e-5))
    mean = buffers['preprocessor._normalizer_mean'][0, 0, :, 0]
    std = buffers['preprocessor._normalizer_stddev'][0, 0, :, 0]
    torch.testing.assert_close(out, (logmel - mean) / std, rtol=0, atol=0)
