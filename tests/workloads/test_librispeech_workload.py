"""LibriSpeech workload API: CTC loss, greedy decoding, WER, batches, model_fn, eval, training.

References: `torch.nn.functional.ctc_loss` applied to one unpadded example at a time
(for the padded, masked batch loss), hand-made decoding and edit-distance cases.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from algoperf import registry, spec
from algoperf.runtime import Runtime
from submissions.optimizers.nadamw import NAdamW
from workloads.librispeech_conformer import metrics
from workloads.librispeech_conformer import workload as conformer

CPU = Runtime(torch.device('cpu'))
SMALL = {
    'librispeech_conformer': {
        'encoder_dim': 32,
        'num_attention_heads': 4,
        'num_encoder_layers': 2,
        'vocab_size': 16,
    },
    'librispeech_deepspeech': {
        'encoder_dim': 32,
        'num_lstm_layers': 2,
        'num_ffn_layers': 2,
        'vocab_size': 16,
    },
}


def _workload(name='librispeech_conformer', **kwargs):
    return registry.get_workload(name, runtime=CPU, **kwargs)


# ---- loss --------------------------------------------------------------------------------------
def test_ctc_loss_matches_per_example_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 12, 6, generator=g, dtype=torch.float64)
    logit_paddings = torch.zeros(3, 12, dtype=torch.float64)
    logit_paddings[1, 9:] = 1
    logit_paddings[2, 5:] = 1
    targets = torch.tensor([[1, 2, 2, 3, 0], [4, 5, 0, 0, 0], [0, 0, 0, 0, 0]]).double()
    target_paddings = torch.tensor([[0, 0, 0, 0, 1], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]).double()
    out = _workload().loss_fn((targets, target_paddings), (logits, logit_paddings))
    expected = []
    for b, (t_len, l_len) in enumerate([(4, 12), (2, 9), (0, 5)]):
        lp = torch.log_softmax(logits[b : b + 1, :l_len], -1).transpose(0, 1)
        expected.append(
            F.ctc_loss(lp, targets[b : b + 1, :t_len].long(), [l_len], [t_len], reduction='sum')
        )
    expected = torch.stack(expected)
    torch.testing.assert_close(out['per_example'], expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out['summed'], expected.sum(), rtol=1e-10, atol=1e-10)
    # No mask: upstream's `mask_batch = target_lengths`, so n_valid counts tokens (4 + 2 + 0).
    assert out['n_valid_examples'].item() == 6
    masked = _workload().loss_fn(
        (targets, target_paddings), (logits, logit_paddings), torch.tensor([1.0, 0.0, 1.0])
    )
    torch.testing.assert_close(masked['summed'], expected[0] + expected[2])
    assert masked['n_valid_examples'].item() == 1
    empty = _workload().loss_fn(
        (targets[2:], target_paddings[2:]), (logits[2:], logit_paddings[2:])
    )
    assert empty['n_valid_examples'].item() == 1  # At least 1, as upstream.


# ---- decoding and WER --------------------------------------------------------------------------
def _one_hot_logits(frames, vocab=6):
    return F.one_hot(torch.tensor(frames), vocab).float()


def test_greedy_decode_hand_cases():
    logits = _one_hot_logits([
        [1, 1, 0, 1, 2, 2, 0, 0, 3],  # Repeats merge; a blank separates repeats.
        [0, 0, 0, 0, 0, 0, 0, 0, 0],  # All blank.
        [5, 4, 4, 4, 5, 5, 5, 5, 5],  # Padded tail (below) is blank, not the 5s.
    ])  # fmt: skip
    paddings = torch.zeros(3, 9)
    paddings[2, 5:] = 1
    decoded, decoded_paddings = metrics.greedy_decode(logits, paddings)
    assert decoded.tolist() == [
        [1, 1, 2, 3, 0, 0, 0, 0, 0],
        [0] * 9,
        [5, 4, 5, 0, 0, 0, 0, 0, 0],
    ]
    assert decoded_paddings.tolist() == (decoded == 0).float().tolist()


def test_edit_distance_hand_cases():
    assert metrics.edit_distance('a b c', 'a b c') == 0
    assert metrics.edit_distance('a b c', 'a x c') == 1  # Substitution.
    assert metrics.edit_distance('a b', 'a b c d') == 2  # Insertions.
    assert metrics.edit_distance('the cat sat', 'cat sat down') == 2
    assert metrics.edit_distance('', 'one two') == 2
    assert metrics.edit_distance('kitten sitting', 'sitting kitten') == 2


def test_batch_edit_distances_equal_the_per_pair_dp():
    rng = np.random.default_rng(0)
    words = ['a', 'b', 'c', 'd', 'the', 'cat']
    pairs = [('a b c', 'a b c'), ('', 'one two'), ('one two', ''), ('', ''), ('kitten sitting', 'sitting kitten')]
    for _ in range(300):
        pairs.append(tuple(' '.join(rng.choice(words, rng.integers(0, 12))) for _ in range(2)))
    got = metrics.batch_edit_distances([p[0] for p in pairs], [p[1] for p in pairs])
    assert got.tolist() == [metrics.edit_distance(s, t) for s, t in pairs]


def test_compute_wer_on_strings_and_token_ids():
    words = {1: 'the', 2: 'cat', 3: 'sat', 4: 'mat', 5: 'on'}
    detok = lambda ids: ' '.join(words[int(i)] for i in ids)
    decoded = np.array([[1, 2, 3, 0], [1, 4, 0, 0]])
    targets = np.array([[1, 2, 3, 5], [1, 4, 0, 0]], dtype=np.float32)
    word_errors, num_words = metrics.compute_wer(
        decoded, (decoded == 0).astype(np.float32), targets,
        (targets == 0).astype(np.float32), detok,
    )  # fmt: skip
    assert (word_errors, num_words) == (1.0, 6.0)
    # Default: token ids as words.
    word_errors, num_words = metrics.compute_wer(
        decoded, decoded == 0, targets, (targets == 0).astype(np.float32)
    )
    assert (word_errors, num_words) == (1.0, 6.0)
    # An empty reference counts one word, as upstream.
    empty = metrics.compute_wer(decoded[:1], decoded[:1] == 0, targets[:1] * 0, targets[:1] * 0 + 1)
    assert empty == (3.0, 1.0)


# ---- data --------------------------------------------------------------------------------------
def test_synthetic_queue_has_upstreams_layout():
    wl = _workload()
    batch = next(wl._build_synthetic_input_queue(np.array([0, 1]), 'train', 2))
    audio, audio_paddings = batch['inputs']
    targets, target_paddings = batch['targets']
    assert audio.shape == audio_paddings.shape == (2, 320_000)
    assert targets.shape == target_paddings.shape == (2, 256)
    assert all(t.dtype == torch.float32 for t in (audio, audio_paddings, targets, target_paddings))
    assert not audio[audio_paddings.bool()].any() and not targets[target_paddings.bool()].any()
    assert bool((audio.abs() <= 32768).all()) and bool((audio == audio.round()).all())
    real = targets[~target_paddings.bool()]
    assert bool(((real >= 1) & (real < 1024)).all())
    # Paddings are a suffix.
    assert bool((audio_paddings.diff(dim=1) >= 0).all())


@pytest.mark.parametrize('name', ['librispeech_conformer', 'librispeech_deepspeech'])
def test_missing_data_names_the_tokenizer_and_the_tool(name, tmp_path):
    with pytest.raises(
        FileNotFoundError, match='spm_model.vocab not found.*algoperf data librispeech'
    ):
        _workload(name).validate_data_dir(str(tmp_path))


def test_spec_constants():
    wl = _workload('librispeech_deepspeech_norm_and_spec_aug')
    assert wl.eval_batch_size == 128 and wl.target_metric_name == 'wer'
    assert wl.loss_type == spec.LossType.CTC_LOSS
    assert _workload('librispeech_conformer').step_hint == 76_000


# ---- model_fn, eval and training on small models -----------------------------------------------
def _small_batch(n=4, samples=16_000, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return conformer.synthetic_batch(
        n, gen, num_samples=samples, num_targets=12, min_target=3, max_target=10
    )


def _small_model(name, wl, seed=0):
    torch.manual_seed(seed)
    return wl._place_model(wl._build_model(**SMALL[name]))


@pytest.mark.parametrize('name', ['librispeech_conformer', 'librispeech_deepspeech'])
def test_model_fn_modes_and_batch_norm_freeze(name):
    wl = _workload(name)
    model = _small_model(name, wl)
    batch = _small_batch()
    bn = next(m for m in model.modules() if getattr(m, '_algoperf_batch_norm', False))
    before = bn.running_mean.clone()
    (logits, _paddings), state = wl.model_fn(
        model, batch, None, spec.ForwardPassMode.TRAIN, None, update_batch_norm=False
    )
    assert state is None and logits.shape == (4, 25, 16) and logits.requires_grad
    torch.testing.assert_close(bn.running_mean, before, rtol=0, atol=0)
    wl.model_fn(model, batch, None, spec.ForwardPassMode.TRAIN, None, update_batch_norm=True)
    assert not torch.equal(bn.running_mean, before)
    (logits, _), _ = wl.model_fn(
        model, batch, None, spec.ForwardPassMode.EVAL, None, update_batch_norm=False
    )
    assert not logits.requires_grad and not model.training


def _vocab16_batch(n=4, seed=0):
    batch = _small_batch(n, seed=seed)
    targets, target_paddings = batch['targets']
    batch['targets'] = ((targets % 15 + 1) * (1 - target_paddings), target_paddings)
    return batch


@pytest.mark.parametrize('name', ['librispeech_conformer', 'librispeech_deepspeech'])
def test_eval_reports_ctc_loss_and_wer(name):
    wl = _workload(name)
    model = _small_model(name, wl)
    batch = _vocab16_batch()
    wl._eval_iters['validation'] = iter([batch, batch])
    result = wl._eval_model_on_split('validation', 8, 4, model, None, np.array([0, 1]), '')
    assert set(result) == {'ctc_loss', 'wer'}
    assert math.isfinite(result['ctc_loss']) and result['ctc_loss'] > 0
    assert result['wer'] >= 0.0


@pytest.mark.parametrize('name', ['librispeech_conformer', 'librispeech_deepspeech'])
def test_a_few_nadamw_steps_lower_the_loss(name):
    wl = _workload(name)
    model = _small_model(name, wl)
    batch = _vocab16_batch()
    opt = NAdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(6):
        (logits, paddings), _ = wl.model_fn(
            model, batch, None, spec.ForwardPassMode.TRAIN, None, True, dropout_rate=0.0
        )
        loss = wl.loss_fn(batch['targets'], (logits, paddings))
        mean = loss['summed'] / loss['n_valid_examples']
        opt.zero_grad()
        mean.backward()
        opt.step()
        losses.append(float(mean.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.9 * losses[0], losses
