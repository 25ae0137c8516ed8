"""LibriSpeech Conformer and DeepSpeech models: counts, type trees, init, frontend, fast paths.

Parameter counts are derived here from the architecture description (spec §6.5/§6.6)
and checked against upstream's documented totals; the log-mel frontend is compared
with a float64 numpy/scipy computation written from the formulas; the SDPA attention
and the sync-free LSTM path are compared with their references (upstream's math and
upstream's packed LSTM) on outputs and gradients.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from algoperf import param_utils, registry, spec
from algoperf.runtime import Runtime
from workloads.librispeech_conformer import models as cmodels
from workloads.librispeech_conformer import preprocessor
from workloads.librispeech_conformer.spec_augment import SpecAug
from workloads.librispeech_deepspeech import models as dmodels

scipy_signal = pytest.importorskip('scipy.signal')

CPU = Runtime(torch.device('cpu'))
T = spec.ParameterType
CONFORMER_NAMES = (
    'librispeech_conformer',
    'librispeech_conformer_attention_temperature',
    'librispeech_conformer_layernorm',
    'librispeech_conformer_gelu',
)
DEEPSPEECH_NAMES = (
    'librispeech_deepspeech',
    'librispeech_deepspeech_tanh',
    'librispeech_deepspeech_no_resnet',
    'librispeech_deepspeech_norm_and_spec_aug',
)
# Small models for numerics: 16 kHz audio of 1 s -> 98 frames -> 25 encoder frames.
SMALL_CONFORMER = {
    'encoder_dim': 32,
    'num_attention_heads': 4,
    'num_encoder_layers': 2,
    'vocab_size': 16,
}
SMALL_DEEPSPEECH = {'encoder_dim': 32, 'num_lstm_layers': 2, 'num_ffn_layers': 2, 'vocab_size': 16}


def _workload(name, **kwargs):
    return registry.get_workload(name, runtime=CPU, **kwargs)


def _meta_model(name):
    with torch.device('meta'):
        return _workload(name)._build_model()


def _linear(i, o, bias=True):
    return i * o + (o if bias else 0)


def _conformer_count(dim=512, vocab=1024, layers=4, heads=8, ff=4, kernel=5, post_ln=True):
    subsample = (_linear(9, dim) + _linear(9 * dim, dim)) + _linear(dim * 20, dim)
    ln = 2 * dim
    ff_module = ln + _linear(dim, ff * dim) + _linear(ff * dim, dim)
    mhsa = ln + _linear(dim, 3 * dim) + _linear(dim, dim) + dim // heads
    conv = ln + 3 * _linear(dim, dim) + dim * kernel + 2 * dim  # + depthwise conv + BN.
    block = 2 * ff_module + mhsa + conv + (ln if post_ln else 0)
    return subsample + layers * block + ln + _linear(dim, vocab)


def _deepspeech_count(dim=512, vocab=1024, lstms=6, ffns=3, decoder_ln=True):
    subsample = _linear(9, dim) + _linear(9 * dim, dim) + _linear(dim * 20, dim)
    hidden = dim // 2
    lstm_direction = 4 * hidden * (dim + hidden) + 2 * 4 * hidden
    norm = 2 * dim  # BN or LN: scale and bias.
    return (
        subsample
        + lstms * (norm + 2 * lstm_direction)
        + ffns * (norm + _linear(dim, dim))
        + (2 * dim if decoder_ln else 0)
        + _linear(dim, vocab)
    )


def test_documented_totals():
    assert _conformer_count() == 32_321_792
    assert _deepspeech_count() == 18_393_600


@pytest.mark.parametrize('name', CONFORMER_NAMES + DEEPSPEECH_NAMES)
def test_parameter_counts(name):
    if name.startswith('librispeech_conformer'):
        expected = _conformer_count(post_ln=name != 'librispeech_conformer_layernorm')
    else:
        expected = _deepspeech_count(decoder_ln=name != 'librispeech_deepspeech_norm_and_spec_aug')
    assert sum(p.numel() for p in _meta_model(name).parameters()) == expected


def _conformer_tree(post_ln=True):
    tree = {
        'subsample.conv1.kernel': T.CONV_WEIGHT,
        'subsample.conv1.bias': T.BIAS,
        'subsample.conv2.kernel': T.CONV_WEIGHT,
        'subsample.conv2.bias': T.BIAS,
        'subsample.linear.weight': T.WEIGHT,
        'subsample.linear.bias': T.BIAS,
    }
    ln = lambda p: {f'{p}.scale': T.LAYER_NORM_SCALE, f'{p}.bias': T.LAYER_NORM_BIAS}
    for i in range(4):
        b = f'conformers.{i}'
        ff = lambda f, b=b: {
            **ln(f'{b}.{f}.ln'),
            f'{b}.{f}.linear1.weight': T.WEIGHT, f'{b}.{f}.linear1.bias': T.BIAS,
            f'{b}.{f}.linear2.weight': T.WEIGHT, f'{b}.{f}.linear2.bias': T.BIAS,
        }  # fmt: skip
        a = f'{b}.mhsa.self_attention'
        tree.update(ff('ff1'))
        tree.update(ln(f'{b}.mhsa.ln'))
        tree.update({
            f'{a}.in_proj.weight': T.ATTENTION_QKV, f'{a}.in_proj.bias': T.ATTENTION_BIAS,
            f'{a}.out_proj.weight': T.ATTENTION_OUT, f'{a}.out_proj.bias': T.ATTENTION_BIAS,
            f'{a}.qs.scale': T.WEIGHT,
        })  # fmt: skip
        tree.update(ln(f'{b}.conv.ln'))
        # Upstream's quirk: 'conv' in the path types the GLU/output Linears as conv weights.
        tree.update({
            f'{b}.conv.lin1.weight': T.CONV_WEIGHT, f'{b}.conv.lin1.bias': T.BIAS,
            f'{b}.conv.lin2.weight': T.CONV_WEIGHT, f'{b}.conv.lin2.bias': T.BIAS,
            f'{b}.conv.conv1.weight': T.CONV_WEIGHT,
            f'{b}.conv.bn.scale': T.BATCH_NORM_SCALE, f'{b}.conv.bn.bias': T.BATCH_NORM_BIAS,
            f'{b}.conv.lin3.weight': T.CONV_WEIGHT, f'{b}.conv.lin3.bias': T.BIAS,
        })  # fmt: skip
        tree.update(ff('ff2'))
        if post_ln:
            tree.update(ln(f'{b}.ln'))
    tree.update(ln('ln'))
    tree.update({'lin.weight': T.WEIGHT, 'lin.bias': T.BIAS})
    return tree


def _deepspeech_tree(layernorm=False):
    tree = {
        'subsample.conv1.kernel': T.CONV_WEIGHT,
        'subsample.conv1.bias': T.BIAS,
        'subsample.conv2.kernel': T.CONV_WEIGHT,
        'subsample.conv2.bias': T.BIAS,
        'subsample.lin.weight': T.WEIGHT,
        'subsample.lin.bias': T.BIAS,
    }

    def norm(p):
        if layernorm:
            return {
                f'{p}.normalization_layer.scale': T.LAYER_NORM_SCALE,
                f'{p}.normalization_layer.bias': T.LAYER_NORM_BIAS,
            }
        return {
            f'{p}.bn_normalization_layer.weight': T.BATCH_NORM_SCALE,
            f'{p}.bn_normalization_layer.bias': T.BATCH_NORM_BIAS,
        }

    for i in range(6):
        tree.update(norm(f'lstms.{i}'))
        for suffix in ('', '_reverse'):
            for kind in ('weight_ih', 'weight_hh', 'bias_ih', 'bias_hh'):
                tree[f'lstms.{i}.lstm.{kind}_l0{suffix}'] = T.WEIGHT if 'weight' in kind else T.BIAS
    for i in range(3):
        tree.update(norm(f'ffns.{i}'))
        tree.update({f'ffns.{i}.lin.weight': T.WEIGHT, f'ffns.{i}.lin.bias': T.BIAS})
    if not layernorm:
        tree.update({'ln.scale': T.LAYER_NORM_SCALE, 'ln.bias': T.LAYER_NORM_BIAS})
    tree.update({'lin.weight': T.WEIGHT, 'lin.bias': T.BIAS})
    return tree


@pytest.mark.parametrize('name', CONFORMER_NAMES + DEEPSPEECH_NAMES)
def test_parameter_type_tree_matches_upstream_names(name):
    types = param_utils.pytorch_param_types(param_utils.pytorch_param_shapes(_meta_model(name)))
    if name.startswith('librispeech_conformer'):
        expected = _conformer_tree(post_ln=name != 'librispeech_conformer_layernorm')
    else:
        expected = _deepspeech_tree(layernorm=name == 'librispeech_deepspeech_norm_and_spec_aug')
    assert list(types.items()) == list(expected.items())


@pytest.mark.parametrize('name', ['librispeech_conformer', 'librispeech_deepspeech'])
def test_output_params_and_shapes(name):
    wl = _workload(name)
    shapes = param_utils.pytorch_param_shapes(_meta_model(name))
    assert tuple(shapes['lin.weight'].shape_tuple) == (1024, 512)
    assert wl.is_output_params('lin.weight') and wl.is_output_params('lin.bias')
    assert not wl.is_output_params('subsample.conv1.kernel')


def _assert_grads_close(grads, ref_grads, tol):
    """Gradients equal up to `tol` relative to each tensor's largest reference entry."""
    for name, grad in grads.items():
        scale = ref_grads[name].abs().max().clamp(min=1e-12)
        torch.testing.assert_close(
            grad / scale, ref_grads[name] / scale, rtol=0, atol=tol, msg=name
        )


def _xavier_bound(w):
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
    return math.sqrt(6.0 / (fan_in + fan_out))


@pytest.mark.parametrize('builder', ['conformer', 'deepspeech'])
def test_init_is_upstreams(builder):
    torch.manual_seed(0)
    if builder == 'conformer':
        model = cmodels.ConformerEncoderDecoder(cmodels.ConformerConfig(**SMALL_CONFORMER))
    else:
        model = dmodels.DeepspeechEncoderDecoder(dmodels.DeepspeechConfig(**SMALL_DEEPSPEECH))
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            bound = _xavier_bound(m.weight)
            w = m.weight.detach()
            assert float(w.abs().max()) <= bound, name
            assert float(w.abs().max()) > 0.5 * bound, name  # Not left at a smaller init.
            if m.bias is not None:
                assert not m.bias.any(), name
        if isinstance(m, cmodels.Conv2dSubsampling):
            assert float(m.kernel.detach().abs().max()) <= _xavier_bound(m.kernel)
            assert not m.bias.any()
    for name, p in model.named_parameters():
        if name.endswith(('.scale', 'normalization_layer.weight')):
            assert not p.any(), name  # (1 + scale) parametrisation starts at 0.
    # Same seed, same weights.
    torch.manual_seed(0)
    if builder == 'conformer':
        again = cmodels.ConformerEncoderDecoder(cmodels.ConformerConfig(**SMALL_CONFORMER))
    else:
        again = dmodels.DeepspeechEncoderDecoder(dmodels.DeepspeechConfig(**SMALL_DEEPSPEECH))
    for (n, p), (_, q) in zip(model.named_parameters(), again.named_parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)


def test_deepspeech_init_replays_upstreams_lazy_materialisation(monkeypatch):
    """Upstream's procedure (LazyLinear, a packed eval forward on randn(2, 320000), then
    Xavier) and ours give identical weights from one seed."""
    config = dmodels.DeepspeechConfig(**SMALL_DEEPSPEECH)
    torch.manual_seed(7)
    ours = dmodels.DeepspeechEncoderDecoder(config)

    monkeypatch.setattr(dmodels, '_uninitialized_linear', lambda i, o: nn.LazyLinear(o))
    monkeypatch.setattr(dmodels.DeepspeechEncoderDecoder, 'reproduce_upstream_init', lambda s: None)
    torch.manual_seed(7)
    upstream = dmodels.DeepspeechEncoderDecoder(
        dmodels.DeepspeechConfig(**SMALL_DEEPSPEECH, use_packed_lstm=True)
    ).eval()
    wave = torch.randn((2, 320_000))
    with torch.no_grad():
        upstream(wave, torch.zeros_like(wave))
    cmodels.initialize(upstream)
    for (n, p), (m, q) in zip(ours.named_parameters(), upstream.named_parameters()):
        assert n == m
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)


# ---- frontend ----------------------------------------------------------------------------------
def _logmel_reference(audio: np.ndarray, paddings: np.ndarray):
    """float64 log-mel from the formulas (upstream's configuration)."""
    x = audio * (1 - paddings) / 32768.0
    n_frames = (x.shape[1] - 401) // 160 + 1
    window = scipy_signal.get_window('hann', 400, fftbins=True)  # Periodic Hann.
    mel = lambda f: 1127.0 * np.log1p(np.asarray(f) / 700.0)
    bin_mel = mel(np.linspace(0, 8000, 257))
    edges = np.linspace(mel(125.0), mel(7600.0), 82)
    weights = np.zeros((257, 80))
    for j in range(80):
        lo, c, hi = edges[j], edges[j + 1], edges[j + 2]
        tri = np.minimum((bin_mel - lo) / (c - lo), (hi - bin_mel) / (hi - c))
        weights[:, j] = np.maximum(tri, 0.0)
    weights[0] = 0.0  # HTK: no DC.
    out = np.zeros((x.shape[0], n_frames, 80))
    out_pad = np.zeros((x.shape[0], n_frames))
    for b in range(x.shape[0]):
        for t in range(n_frames):
            seg = x[b, t * 160 : t * 160 + 401]
            y = np.empty(400)
            y[0] = seg[0] * (1 - 0.97)
            y[1:] = seg[1:400] - 0.97 * seg[0:399]
            power = np.abs(np.fft.rfft(y * window, 512)) ** 2
            out[b, t] = np.log(np.maximum(power @ weights, 1e-5))
            out_pad[b, t] = paddings[b, t * 160 : t * 160 + 401].min()
    mean = np.asarray(preprocessor.LIBRISPEECH_MEAN_VECTOR)
    std = np.asarray(preprocessor.LIBRISPEECH_STD_VECTOR)
    return (out - mean) / std, out_pad


def _speechlike_audio(n, samples, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000.0
    audio = np.zeros((n, samples))
    for b in range(n):
        for f in rng.uniform(100, 7000, 6):
            audio[b] += rng.uniform(500, 4000) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6))
        audio[b] += rng.normal(0, 300, samples)
    return np.round(audio)


def test_frontend_matches_formulas():
    samples = 8000
    audio = _speechlike_audio(2, samples, 0)
    paddings = np.zeros((2, samples))
    paddings[1, 5000:] = 1.0
    audio[1, 5000:] = 12345.0  # Garbage under the padding: must be ignored.
    expected, expected_pad = _logmel_reference(audio, paddings)
    out, out_pad = preprocessor.MelFilterbankFrontend()(
        torch.tensor(audio, dtype=torch.float32), torch.tensor(paddings, dtype=torch.float32)
    )
    assert out.shape == (2, 48, 80) and out_pad.shape == (2, 48)
    np.testing.assert_array_equal(out_pad.numpy(), expected_pad)
    # float32 STFT vs float64: max error 3e-5 in normalised log-mel units (median 6e-7);
    # padded frames hit the 1e-5 floor exactly in both.
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=2e-4)
    assert float(out_pad[1].sum()) == 48 - math.ceil(5000 / 160)  # Frames starting in the padding.


def test_frontend_frame_count_on_full_length():
    paddings = torch.zeros(1, 320_000)
    out, out_pad = preprocessor.MelFilterbankFrontend()(torch.zeros(1, 320_000), paddings)
    assert out.shape == (1, 1998, 80) and out_pad.shape == (1, 1998)


# ---- SpecAugment -------------------------------------------------------------------------------
def test_spec_augment_masks():
    torch.manual_seed(0)
    aug = SpecAug(freq_mask_count=2, freq_mask_max_bins=27, time_mask_count=10,
                  time_mask_max_ratio=0.05, use_dynamic_time_mask_max_frames=True)  # fmt: skip
    x = torch.ones(8, 400, 80)
    paddings = torch.zeros(8, 400)
    paddings[:, 300:] = 1.0
    out, _ = aug(x, paddings)
    freq_zero = (out == 0).all(dim=1)  # [B, 80] bins zero at every frame.
    time_zero = (out == 0).all(dim=2)  # [B, T] frames zero in every bin.
    for b in range(8):
        assert int(freq_zero[b].sum()) <= 2 * 26  # Sizes int(27 * U) <= 26 per mask.
        # Each time mask is at most int(0.05 * 300) = 15 frames, inside the valid length.
        assert int(time_zero[b].sum()) <= 10 * 15
        assert not time_zero[b, 315:].any()
    assert freq_zero.any() and time_zero.any()
    # The same seed gives the same masks.
    torch.manual_seed(0)
    again, _ = aug(x, paddings)
    torch.testing.assert_close(out, again, rtol=0, atol=0)


# ---- attention: SDPA vs reference -------------------------------------------------------------
def _small_audio(n=3, samples=16_000, seed=0):
    audio = torch.tensor(_speechlike_audio(n, samples, seed), dtype=torch.float32)
    paddings = torch.zeros(n, samples)
    for b in range(1, n):
        paddings[b, samples - 3000 * b :] = 1.0
    return audio * (1 - paddings), paddings


@pytest.mark.parametrize('temperature', [1.0, 1.6])
def test_sdpa_matches_reference_outputs_and_gradients(temperature):
    config = dict(SMALL_CONFORMER, attention_temperature=temperature, use_specaug=False)
    torch.manual_seed(0)
    fast = cmodels.ConformerEncoderDecoder(cmodels.ConformerConfig(**config, use_sdpa=True))
    ref = cmodels.ConformerEncoderDecoder(cmodels.ConformerConfig(**config, use_sdpa=False))
    ref.load_state_dict(fast.state_dict())
    with torch.no_grad():  # Non-trivial query scales.
        for m in (fast, ref):
            for blk in m.conformers:
                blk.mhsa.self_attention.qs.scale.copy_(torch.linspace(-1, 1, 8))
    audio, paddings = _small_audio()
    outs = []
    for model in (fast, ref):
        model.train()
        logits, logit_pad = model(audio, paddings, dropout_rate=0.0)
        (logits * (1 - logit_pad)[..., None]).square().sum().backward()
        outs.append((logits, {n: p.grad for n, p in model.named_parameters()}))
    valid = (1 - logit_pad).bool()
    # fp32, two summation orders of the same softmax: ~1e-6 relative.
    torch.testing.assert_close(outs[0][0][valid], outs[1][0][valid], rtol=1e-4, atol=1e-4)
    _assert_grads_close(outs[0][1], outs[1][1], tol=2e-5)


# ---- padding invariance ------------------------------------------------------------------------
def test_conformer_padded_audio_does_not_change_real_frames():
    torch.manual_seed(0)
    model = cmodels.ConformerEncoderDecoder(cmodels.ConformerConfig(**SMALL_CONFORMER))
    audio, paddings = _small_audio()
    garbage = audio + 5000 * torch.randn(audio.shape) * paddings
    results = []
    for x in (audio, garbage):
        model.train()
        bn = model.conformers[0].conv.bn
        bn.running_mean.zero_()
        bn.running_var.fill_(1)
        torch.manual_seed(1)  # Same SpecAugment masks.
        logits, logit_pad = model(x, paddings, dropout_rate=0.0)
        results.append((logits, bn.running_mean.clone(), bn.running_var.clone()))
    valid = (1 - logit_pad).bool()
    torch.testing.assert_close(results[0][0][valid], results[1][0][valid], rtol=0, atol=0)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=0)
    torch.testing.assert_close(results[0][2], results[1][2], rtol=0, atol=0)


def test_conformer_blocks_ignore_padded_frame_values():
    """Encoder blocks: values at padded frames change neither real frames nor BN stats."""
    torch.manual_seed(0)
    model = cmodels.ConformerEncoderDecoder(cmodels.ConformerConfig(**SMALL_CONFORMER)).train()
    x = torch.randn(3, 25, 32)
    paddings = torch.zeros(3, 25)
    paddings[1, 20:] = 1
    paddings[2, 11:] = 1
    noisy = x + 100 * torch.randn_like(x) * paddings[..., None]
    results = []
    for inp in (x, noisy):
        bn = model.conformers[1].conv.bn
        bn.running_mean.zero_()
        bn.running_var.fill_(1)
        out = inp
        for block in model.conformers:
            out = block(out, paddings, 0.0)
        results.append((out, bn.running_mean.clone(), bn.running_var.clone()))
    valid = (1 - paddings).bool()
    torch.testing.assert_close(results[0][0][valid], results[1][0][valid], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(results[0][2], results[1][2], rtol=1e-6, atol=1e-6)


# ---- batch norm --------------------------------------------------------------------------------
def test_batch_norm_statistics_and_momentum():
    bn = cmodels.BatchNorm(4, momentum=0.001, epsilon=1e-3).train()
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    bn.double()
    paddings = torch.zeros(2, 6, dtype=torch.float64)
    paddings[1, 2:] = 1
    valid = x[(1 - paddings).bool()]  # [8, 4]
    out = bn(x, paddings)
    mean, var = valid.mean(0), valid.var(0, unbiased=False)
    torch.testing.assert_close(bn.running_mean, 0.001 * mean)
    torch.testing.assert_close(bn.running_var, 0.999 + 0.001 * var)
    expected = (x - mean) / torch.sqrt(var + 1e-3)
    torch.testing.assert_close(out[(1 - paddings).bool()], expected[(1 - paddings).bool()])
    assert not out[paddings.bool()].any()
    # Frozen (update_batch_norm=False sets momentum 0): statistics stay.
    from algoperf.pytorch_utils import update_batch_norm_fn

    before = bn.running_mean.clone()
    update_batch_norm_fn(bn, update_batch_norm=False)
    bn(x, paddings)
    torch.testing.assert_close(bn.running_mean, before, rtol=0, atol=0)
    update_batch_norm_fn(bn, update_batch_norm=True)
    assert bn.momentum == 0.001


# ---- DeepSpeech LSTM: sync-free vs packed -------------------------------------------------------
@pytest.mark.parametrize('layernorm', [False, True])
def test_deepspeech_unpacked_lstm_matches_packed(layernorm):
    config = dict(SMALL_DEEPSPEECH, use_specaug=False, layernorm_everywhere=layernorm)
    torch.manual_seed(0)
    fast = dmodels.DeepspeechEncoderDecoder(dmodels.DeepspeechConfig(**config))
    ref = dmodels.DeepspeechEncoderDecoder(dmodels.DeepspeechConfig(**config, use_packed_lstm=True))
    ref.load_state_dict(fast.state_dict())
    audio, paddings = _small_audio()
    outs = []
    for model in (fast, ref):
        model.train()
        logits, logit_pad = model(audio, paddings, dropout_rate=0.0)
        (logits * (1 - logit_pad)[..., None]).square().sum().backward()
        outs.append((logits, {n: p.grad for n, p in model.named_parameters()}))
    # Padded frames included: both paths output zero LSTM states there.
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-5)
    # fp32, different summation orders (per-direction LSTMs, gathers): seen 2e-6.
    _assert_grads_close(outs[0][1], outs[1][1], tol=2e-5)


def test_reverse_within_length_is_an_involution():
    x = torch.arange(2 * 5).reshape(2, 5, 1).float()
    lengths = torch.tensor([3, 5])
    r = dmodels.reverse_within_length(x, lengths)
    assert r[0, :, 0].tolist() == [2, 1, 0, 3, 4]
    assert r[1, :, 0].tolist() == [9, 8, 7, 6, 5]
    torch.testing.assert_close(dmodels.reverse_within_length(r, lengths), x, rtol=0, atol=0)


# ---- full models -------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['librispeech_conformer', 'librispeech_deepspeech'])
def test_full_model_forward_shapes(name):
    torch.manual_seed(0)
    model = _workload(name)._build_model().eval()
    audio, paddings = _small_audio(n=2, samples=8000)
    with torch.no_grad():
        logits, logit_pad = model(audio, paddings)
    assert logits.shape == (2, 12, 1024) and logit_pad.shape == (2, 12)
    assert bool(torch.isfinite(logits).all())
