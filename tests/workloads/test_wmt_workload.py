"""WMT workload API: loss and BLEU against independent references, batches, eval, training.

References: the label-smoothed cross entropy written out from log-softmax, and
`sacrebleu.corpus_bleu` (the library upstream's `bleu.py` ports) for BLEU.
"""

import math

import pytest
import torch

from algoperf import registry, spec
from algoperf.runtime import Runtime
from workloads.wmt import bleu, decode, models
from workloads.wmt import workload as wmt

sacrebleu = pytest.importorskip('sacrebleu')
CPU = Runtime(torch.device('cpu'))
SMALL = {'ntoken': wmt.VOCAB_SIZE, 'd_model': 32, 'nhead': 4, 'd_hid': 32, 'nlayers': 2}


def _workload(name='wmt', **kwargs):
    return registry.get_workload(name, runtime=CPU, **kwargs)


def _small_workload(name='wmt', **model_kwargs):
    wl = _workload(name)
    wl._build_model = lambda: models.Transformer(**{**SMALL, **model_kwargs})
    return wl


@pytest.mark.parametrize(
    'name, cls',
    [
        ('wmt', 'WmtWorkload'),
        ('wmt_post_ln', 'WmtWorkloadPostLN'),
        ('wmt_attention_temp', 'WmtWorkloadAttentionTemp'),
        ('wmt_glu_tanh', 'WmtWorkloadGLUTanH'),
    ],
)
def test_registry_classes_and_output_params(name, cls):
    wl = _workload(name)
    assert type(wl).__name__ == cls and wl.target_metric_name == 'bleu'
    assert wl.is_output_params('shared_embedding.weight')
    assert not wl.is_output_params('decoder.decoder.norm.weight')
    assert wl.use_sdpa and not _workload(name, use_sdpa=False).use_sdpa


# ---- loss --------------------------------------------------------------------------------------
@pytest.mark.parametrize('label_smoothing', [0.0, 0.1])
def test_loss_fn_is_masked_label_smoothed_cross_entropy(label_smoothing):
    g = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(3, 7, 50, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 50, (3, 7), generator=g)
    weights = (torch.rand(3, 7, generator=g) < 0.7).long()
    out = _workload().loss_fn(targets, logits, weights, label_smoothing=label_smoothing)
    log_probs = torch.log_softmax(logits, dim=-1)
    one_hot = torch.nn.functional.one_hot(targets, 50).double()
    smoothed = (1 - label_smoothing) * one_hot + label_smoothing / 50
    expected = -(smoothed * log_probs).sum(-1) * weights
    torch.testing.assert_close(out['per_example'], expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out['summed'], expected.sum(), rtol=1e-12, atol=1e-12)
    assert out['n_valid_examples'].item() == int(weights.sum())
    assert _workload().loss_fn(targets, logits)['n_valid_examples'].item() == 21
    with pytest.raises(ValueError, match='Incorrect shapes'):
        _workload().loss_fn(targets, logits[..., 0])


# ---- batches -----------------------------------------------------------------------------------
def test_synthetic_train_batches_are_packed_like_upstreams():
    batch = next(_workload()._build_synthetic_input_queue([3, 0], 'train', 4))
    assert list(batch) == list(wmt.input_pipeline.TRAIN_KEYS)
    for v in batch.values():
        assert v.shape == (4, 256) and v.dtype == torch.int64
    torch.testing.assert_close(batch['weights'], (batch['targets'] > 0).long(), rtol=0, atol=0)
    for side in ('inputs', 'targets'):
        tokens, seg, pos = (batch[side], batch[f'{side}_segmentation'], batch[f'{side}_position'])
        for row in range(4):
            n = int((tokens[row] > 0).sum())
            assert bool((tokens[row, n:] == 0).all() and (seg[row, n:] == 0).all())
            assert bool((pos[row, n:] == 0).all()) and bool((tokens[row, :n] > 0).all())
            segments = seg[row, :n]
            assert segments[0] == 1 and bool((segments.diff() >= 0).all())
            assert int(segments.max()) >= 2  # Packed: several pairs per row.
            for s in range(1, int(segments.max()) + 1):
                idx = (segments == s).nonzero().flatten()
                assert torch.equal(pos[row, idx], torch.arange(len(idx)))
                assert tokens[row, idx[-1]] == decode.EOS_ID
        assert torch.equal(
            batch['inputs_segmentation'].amax(1), batch['targets_segmentation'].amax(1)
        )  # Pairs: as many input as target segments.


def test_synthetic_eval_batches():
    batch = next(_workload()._build_synthetic_input_queue([3, 0], 'validation', 3))
    assert list(batch) == list(wmt.input_pipeline.EVAL_KEYS)
    assert all(v.shape == (3, 256) and v.dtype == torch.int64 for v in batch.values())
    torch.testing.assert_close(batch['weights'], (batch['targets'] > 0).long(), rtol=0, atol=0)


def test_missing_data_names_the_format_file_and_the_tool(tmp_path):
    with pytest.raises(
        FileNotFoundError, match='wmt_de_en/format.json not found.*algoperf data wmt'
    ):
        _workload().validate_data_dir(str(tmp_path))
    with pytest.raises(FileNotFoundError, match='wmt_sentencepiece_model not found'):
        _workload('wmt_glu_tanh')._build_input_queue([0, 0], 'train', str(tmp_path), 8)


# ---- the base model, once ----------------------------------------------------------------------
def test_base_model_forward_on_a_packed_batch():
    wl = _workload()
    model, state = wl.init_model_fn([0, 0])
    assert state is None
    assert sum(p.numel() for p in model.parameters()) == 133_521_408
    batch = next(wl._build_synthetic_input_queue([0, 0], 'train', 1))
    logits, _ = wl.model_fn(model, batch, None, spec.ForwardPassMode.EVAL, None, False)
    assert logits.shape == (1, 256, 32_000) and not model.training
    loss = wl.loss_fn(batch['targets'], logits, batch['weights'])
    # Untrained: close to uniform over the vocabulary (embedding N(0, 1) / sqrt(1024)).
    per_token = loss['summed'].item() / loss['n_valid_examples'].item()
    assert abs(per_token - math.log(32_000)) < 1.5


# ---- BLEU --------------------------------------------------------------------------------------
HYPS = [
    'The cat sat on the mat.',
    "It's 3.5 km away, isn't it?",
    'Das ist  ein Test-Satz  ',
    'a b c d e f',
    '',
    'Numbers: 1,000 and 2.5% (approx.) & more "quotes".',
]
REFS = [
    'The cat is on the mat.',
    "It is 3.5 km away, isn't it?",
    'This is a test sentence',
    'a b c d x f',
    'something',
    'Numbers: 1,000 and 2.5% (approx.) &amp; more &quot;quotes&quot;.',
]


def test_bleu_equals_sacrebleu():
    ours = bleu.corpus_bleu(HYPS, [REFS])
    theirs = sacrebleu.corpus_bleu(HYPS, [REFS])
    assert ours.score == pytest.approx(theirs.score, rel=1e-12)
    assert (ours.counts, ours.totals) == (list(theirs.counts), list(theirs.totals))
    assert (ours.sys_len, ours.ref_len) == (theirs.sys_len, theirs.ref_len)
    # Two reference streams: closest reference length, max n-gram counts.
    refs2 = [h.upper() if i % 2 else h for i, h in enumerate(HYPS)]
    ours = bleu.corpus_bleu(HYPS, [REFS, refs2])
    assert ours.score == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS, refs2]).score, rel=1e-12)


def test_bleu_summed_statistics_equal_the_whole_corpus():
    """What the DDP all-reduce relies on: per-shard statistics add up."""
    stats = [bleu.corpus_stats(HYPS[i::2], [REFS[i::2]]) for i in (0, 1)]
    summed = bleu.corpus_bleu(HYPS[0::2], [REFS[0::2]], reduce_fn=lambda s: [
        a + b for a, b in zip(s, stats[1])
    ])  # fmt: skip
    assert stats[0] == bleu.corpus_stats(HYPS[0::2], [REFS[0::2]])
    assert summed.score == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score, rel=1e-12)


def test_bleu_without_unigram_matches_is_upstreams_smoothed_value():
    """sacreBLEU 2.x returns 0 here; upstream's port (sacreBLEU 1.3.1) smooths every order."""
    ours = bleu.corpus_bleu(['a b c d e'], [['v w x y z']])
    expected = math.exp(
        sum(math.log(100 / (2**n * t)) for n, t in zip((1, 2, 3, 4), (5, 4, 3, 2))) / 4
    )
    assert ours.score == pytest.approx(expected, rel=1e-12)
    assert sacrebleu.corpus_bleu(['a b c d e'], [['v w x y z']]).score == 0.0


def test_decode_tokens_truncates_like_upstream():
    wl = _workload()
    assert wl._decode_tokens(torch.tensor([5, 6, 2, 7, 2, 0])) == '5 6'
    assert wl._decode_tokens(torch.tensor([5, 6, 7, 0])) == '5'  # No EOS: first token only.


def test_perfect_translations_score_100():
    wl = _workload()
    batch = next(wl._build_synthetic_input_queue([0, 0], 'validation', 3))
    batch['weights'][2] = 0  # A padding row: not scored.
    batch['targets'][2, :4] = torch.tensor([9, 9, 9, 2])
    wl.predict_step = lambda inputs, params, eos_id, max_len: batch['targets'].clone()
    score = wl.translate_and_calculate_bleu(None, iter([batch]), 1, 256)
    assert score == pytest.approx(100.0)


# ---- eval and training on a small model --------------------------------------------------------
def test_eval_on_a_tiny_batch():
    torch.manual_seed(0)
    wl = _small_workload()
    wl.max_predict_length = 6
    model, _ = wl.init_model_fn([0, 0])
    pool = [next(wl._build_synthetic_input_queue([s, 0], 'validation', 2)) for s in (1, 2)]
    wl._build_input_queue = lambda *a, **kw: iter(pool * 2)  # Upstream's repeating iterator.
    result = wl._eval_model_on_split('validation', 3, 2, model, None, [1, 1], '')
    assert set(result) == {'loss', 'accuracy', 'bleu'}
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(b['inputs'], b['targets']) for b in pool])
    targets = torch.cat([b['targets'] for b in pool])
    weights = torch.cat([b['weights'] for b in pool]).bool()
    losses = torch.nn.functional.cross_entropy(logits[weights], targets[weights], reduction='none')
    assert result['loss'] == pytest.approx(losses.mean().item(), rel=1e-6)
    accuracy = (logits.argmax(-1) == targets)[weights].double().mean().item()
    assert result['accuracy'] == pytest.approx(accuracy)
    assert 0.0 <= result['bleu'] <= 100.0


def test_nadamw_steps_lower_the_loss_on_a_fixed_batch():
    from submissions.baselines.nadamw import submission as nadamw

    torch.manual_seed(0)
    # A 512-token vocabulary keeps the logits small on CPU; batch ids are folded into it.
    wl = _small_workload('wmt_glu_tanh', ntoken=512, glu=True, activation='tanh')
    model, state = wl.init_model_fn([0, 0])
    hp = nadamw.SELF_TUNING_HPARAMS._replace(warmup_factor=1e-5, learning_rate=3e-3)
    opt = nadamw.init_optimizer_state(wl, model, state, hp, [0, 0])
    batch = next(wl._build_synthetic_input_queue([0, 1], 'train', 2))
    for key in ('inputs', 'targets'):
        batch[key] = torch.where(batch[key] > 0, 3 + batch[key] % 509, 0)

    def loss():
        with torch.no_grad():
            out, _ = wl.model_fn(model, batch, None, spec.ForwardPassMode.EVAL, None, False)
            result = wl.loss_fn(batch['targets'], out, batch['weights'])
            return result['summed'].item() / result['n_valid_examples'].item()

    before = loss()
    for step in range(5):
        opt, model, state = nadamw.update_params(
            wl, model, wl.model_params_types, state, hp, batch, wl.loss_type, opt, [], step,
            [0, step],
        )  # fmt: skip
    after = loss()
    assert math.isfinite(after) and after < before - 0.1, (before, after)
