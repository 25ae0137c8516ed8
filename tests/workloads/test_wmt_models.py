"""WMT Transformer: parameter counts and type trees, init, masks, SDPA parity, decoding.

Parameter counts are recomputed here from the layer shapes upstream's model declares
(not from the model code); the masks are checked entry by entry against loops over
positions and behaviourally (perturbing tokens a position must not see); the SDPA path
against the reference (upstream's float-mask math); the cached decoder against
teacher forcing on the same prefix; beam search of width 1 against greedy decoding.
"""

import math

import pytest
import torch
from torch import nn

from algoperf import param_utils, registry, spec
from algoperf.runtime import Runtime
from workloads.wmt import decode, models
from workloads.wmt.workload import synthetic_train_batch

CPU = Runtime(torch.device('cpu'))
T = spec.ParameterType
NAMES = ('wmt', 'wmt_post_ln', 'wmt_attention_temp', 'wmt_glu_tanh')
# Upstream's documented counts (spec §6.8).
DOCUMENTED = {'wmt': 133_521_408, 'wmt_glu_tanh': 146_116_608}
SMALL = {'ntoken': 97, 'd_model': 32, 'nhead': 4, 'd_hid': 32, 'nlayers': 2}
VARIANTS = {
    'base': {},
    'post_ln': {'pre_ln': False},
    'attention_temp': {'attention_temp': 4.0},
    'glu_tanh': {'glu': True, 'activation': 'tanh'},
}


def _workload(name):
    return registry.get_workload(name, runtime=CPU)


def _meta_model(name):
    with torch.device('meta'):
        return _workload(name)._build_model()


def _expected_count(vocab=32000, d=1024, ff=1024, layers=6, glu=False, pre_ln=True):
    linear = lambda i, o, bias=True: i * o + (o if bias else 0)
    norm = 2 * d
    ffn = linear(d, ff) + linear(ff, d)
    self_attn = linear(d, 3 * d, False) + linear(d, d, False)  # in_proj, out_proj.
    cross_attn = linear(d, d, False) + linear(d, 2 * d, False) + linear(d, d, False)
    enc = self_attn + ffn + 2 * norm
    dec = self_attn + cross_attn + ffn + 3 * norm
    if glu:  # Encoder: Linear(d, ff); decoder: Linear(ff, ff).
        enc, dec = enc + linear(d, ff), dec + linear(ff, ff)
    final_norms = 2 * norm if pre_ln else 0
    return vocab * d + layers * (enc + dec) + final_norms


@pytest.mark.parametrize('name', NAMES)
def test_parameter_counts(name):
    extra = registry.get_spec(name).extra
    expected = _expected_count(glu=extra['glu'], pre_ln=extra['pre_ln'])
    assert DOCUMENTED.get(name, expected) == expected
    assert sum(p.numel() for p in _meta_model(name).parameters()) == expected


def _expected_tree(layers=6, glu=False, pre_ln=True):
    tree = {'shared_embedding.weight': T.EMBEDDING}
    ffn = {'linear1.weight': T.WEIGHT, 'linear1.bias': T.BIAS}
    if glu:
        ffn.update({'linear_glu.weight': T.WEIGHT, 'linear_glu.bias': T.BIAS})
    ffn.update({'linear2.weight': T.WEIGHT, 'linear2.bias': T.BIAS})
    norms = lambda n: {
        f'norm{i}.{p}': t
        for i in range(1, n + 1)
        for p, t in (('weight', T.LAYER_NORM_SCALE), ('bias', T.LAYER_NORM_BIAS))
    }
    for i in range(layers):
        p = f'encoder.encoder.layers.{i}.'
        tree[p + 'self_attn.in_proj.weight'] = T.ATTENTION_QKV
        tree[p + 'self_attn.out_proj.weight'] = T.ATTENTION_OUT
        tree.update({p + k: v for k, v in {**ffn, **norms(2)}.items()})
    if pre_ln:
        tree['encoder.encoder.norm.weight'] = T.LAYER_NORM_SCALE
        tree['encoder.encoder.norm.bias'] = T.LAYER_NORM_BIAS
    for i in range(layers):
        p = f'decoder.decoder.layers.{i}.'
        tree[p + 'self_attn.in_proj.weight'] = T.ATTENTION_QKV
        tree[p + 'self_attn.out_proj.weight'] = T.ATTENTION_OUT
        tree[p + 'multihead_attn.q_proj.weight'] = T.ATTENTION_Q
        tree[p + 'multihead_attn.kv_proj.weight'] = T.ATTENTION_KV
        tree[p + 'multihead_attn.out_proj.weight'] = T.ATTENTION_OUT
        tree.update({p + k: v for k, v in {**ffn, **norms(3)}.items()})
    if pre_ln:
        tree['decoder.decoder.norm.weight'] = T.LAYER_NORM_SCALE
        tree['decoder.decoder.norm.bias'] = T.LAYER_NORM_BIAS
    return tree


@pytest.mark.parametrize('name', NAMES)
def test_parameter_names_order_and_types(name):
    extra = registry.get_spec(name).extra
    model = _meta_model(name)
    types = param_utils.pytorch_param_types(param_utils.pytorch_param_shapes(model))
    expected = _expected_tree(glu=extra['glu'], pre_ln=extra['pre_ln'])
    assert list(types) == list(expected)  # Same names in upstream's registration order.
    assert types == expected
    # The shared modules appear under encoder./decoder. in the state_dict, as upstream's.
    keys = set(model.state_dict())
    for prefix in ('', 'encoder.', 'decoder.'):
        assert {prefix + 'shared_embedding.weight', prefix + 'pos_encoder.pe'} <= keys


def test_variant_switches_reach_the_model():
    for name, check in {
        'wmt_post_ln': lambda m: (
            m.decoder.decoder.norm is None and not m.encoder.encoder.layers[0].pre_ln
        ),
        'wmt_attention_temp': lambda m: all(
            a.attention_temp == 4.0 for a in m.modules() if isinstance(a, models.MultiheadAttention)
        ),
        'wmt_glu_tanh': lambda m: (
            m.decoder.decoder.layers[0].glu and m.decoder.decoder.layers[0].activation is torch.tanh
        ),
    }.items():
        assert check(_meta_model(name)), name


def test_init_is_upstreams_and_seeded():
    torch.manual_seed(0)
    model = models.Transformer(**SMALL)
    assert (
        model.encoder.shared_embedding is model.decoder.shared_embedding is model.shared_embedding
    )
    assert model.shared_embedding.weight.std().item() == pytest.approx(1.0, abs=0.05)
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            bound = math.sqrt(6.0 / (m.in_features + m.out_features))  # Xavier-uniform.
            assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.9 * bound, name
            if m.bias is not None:
                assert m.bias.abs().max() < 1e-5 and m.bias.std() > 1e-7, name
        if isinstance(m, models.MultiheadAttention):
            assert all(p.ndim == 2 for p in m.parameters()), name  # No attention biases.
    torch.manual_seed(0)
    again = models.Transformer(**SMALL)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


# fp32 parity: the paths differ in operation order only (where the temperature and the
# 1/sqrt(d) scale are applied, SDPA's fused softmax, the additive -1e10 vs a boolean
# mask, which give exactly 0 weight either way). Measured differences are a few ulps of
# the O(1)-O(10) activations (<= 2e-6); rtol 1e-5 / atol 1e-5 leaves headroom and is far
# below the effect of any mask or scale error (O(0.1) and more).
PARITY = {'rtol': 1e-5, 'atol': 1e-5}
# The same tolerance covers rows whose masked-out keys changed: their weights are exactly
# 0, but BLAS may block the changed matrices differently (measured <= 1e-6).


# ---- masks -------------------------------------------------------------------------------------
def _packed_example():
    """Two rows: [seg1 | seg2 | pad] packed, and one unpacked padded sequence (seg 1)."""
    src = torch.tensor([[5, 6, 2, 7, 8, 9, 2, 0], [4, 5, 6, 2, 0, 0, 0, 0]])
    src_seg = torch.tensor([[1, 1, 1, 2, 2, 2, 2, 0], [1, 1, 1, 1, 0, 0, 0, 0]])
    tgt = torch.tensor([[3, 4, 5, 2, 6, 2, 0, 0], [7, 8, 2, 0, 0, 0, 0, 0]])
    tgt_seg = torch.tensor([[1, 1, 1, 1, 2, 2, 0, 0], [1, 1, 1, 0, 0, 0, 0, 0]])
    return src, src_seg, tgt, tgt_seg


def _positions(seg):
    pos = torch.zeros_like(seg)
    for b in range(seg.shape[0]):
        for i in range(1, seg.shape[1]):
            pos[b, i] = pos[b, i - 1] + 1 if seg[b, i] == seg[b, i - 1] else 0
    return pos


def test_masks_entry_by_entry():
    src, src_seg, tgt, tgt_seg = _packed_example()
    enc = models.make_src_mask(src, src_seg)
    self_mask, mem_mask = models.make_tgt_and_memory_mask(tgt, src, src_seg, tgt_seg)
    assert enc.dtype == self_mask.dtype == mem_mask.dtype == torch.bool
    assert enc.shape == (2, 1, 8, 8) and mem_mask.shape == (2, 1, 8, 8)
    for b in range(2):
        for i in range(8):
            for j in range(8):
                same = bool(src[b, i] and src[b, j] and src_seg[b, i] == src_seg[b, j])
                assert bool(enc[b, 0, i, j]) == same
                causal = bool(tgt[b, i] and tgt[b, j] and tgt_seg[b, i] == tgt_seg[b, j] and j <= i)
                assert bool(self_mask[b, 0, i, j]) == causal
                cross = bool(tgt[b, i] and src[b, j] and tgt_seg[b, i] == src_seg[b, j])
                assert bool(mem_mask[b, 0, i, j]) == cross
    # Unpacked batches (no segmentation): padding and causality only.
    self_mask, mem_mask = models.make_tgt_and_memory_mask(tgt, src, None, None)
    assert bool(self_mask[0, 0, 5, 0]) and not bool(self_mask[0, 0, 0, 5])
    assert bool(mem_mask[0, 0, 0, 5]) and not bool(mem_mask[0, 0, 0, 7])


@pytest.mark.parametrize('use_sdpa', [True, False])
def test_no_attention_across_segments_or_to_the_future(use_sdpa):
    """Perturbing tokens a position must not see leaves its logits unchanged."""
    torch.manual_seed(0)
    model = models.Transformer(**SMALL, use_sdpa=use_sdpa).eval()
    src, src_seg, tgt, tgt_seg = _packed_example()

    def logits(s, t):
        return model(s, t, _positions(src_seg), _positions(tgt_seg), src_seg, tgt_seg)

    base = logits(src, tgt)
    # Source segment 2 (positions 3..6 of row 0): target segment 1 must not change.
    src2 = src.clone()
    src2[0, 3:6] = torch.tensor([11, 12, 13])
    changed = logits(src2, tgt)
    torch.testing.assert_close(changed[0, :4], base[0, :4], **PARITY)
    assert not torch.allclose(changed[0, 4:6], base[0, 4:6])
    # A later target token: earlier positions (which see inputs up to it via the shift) keep
    # their logits. Targets 0..2 of segment 1; position 2 is the last one to stay.
    tgt2 = tgt.clone()
    tgt2[0, 2] = 9
    changed = logits(src, tgt2)
    torch.testing.assert_close(changed[0, :3], base[0, :3], **PARITY)
    assert not torch.allclose(changed[0, 3], base[0, 3])
    # Padding is never attended to: more of it changes no real position.
    padded = model(src[1:], tgt[1:])
    trimmed = model(src[1:, :5], tgt[1:, :5])
    torch.testing.assert_close(padded[:, :3], trimmed[:, :3], **PARITY)


# ---- SDPA vs the reference ---------------------------------------------------------------------


@pytest.mark.parametrize('temperature', [1.0, 4.0])
def test_attention_parity_at_base_shapes(temperature):
    """16 heads of 64 over 256 packed positions (the base model's attention), fwd and bwd.

    Both fp32 paths are compared with the reference run in float64: SDPA's error must be
    no larger than twice the fp32 reference's own (with temperature 4 the softmax is
    sharp and both reach ~2e-6 of the largest gradient), so an absolute tolerance is not
    needed to absorb the sharper case.
    """
    g = torch.Generator().manual_seed(0)
    batch = synthetic_train_batch(2, g)
    mask = models.make_src_mask(batch['inputs'], batch['inputs_segmentation'])
    qkv = [torch.randn(2, 16, 256, 64, generator=g) for _ in range(3)]
    valid = (batch['inputs'] > 0)[:, None, :, None]  # Padding query rows feed nothing.
    results = []
    for use_sdpa, dtype in ((False, torch.float64), (False, torch.float32), (True, torch.float32)):
        q, k, v = (t.to(dtype).requires_grad_() for t in qkv)
        out = models.attention(q, k, v, mask, 0.0, True, temperature, use_sdpa) * valid
        results.append((out, *torch.autograd.grad(out.square().sum(), (q, k, v))))
    for exact, ref, fast in zip(*results):
        err_ref = (ref.double() - exact).abs().max().item()
        err_fast = (fast.double() - exact).abs().max().item()
        assert err_fast <= 2 * err_ref + 1e-7, (err_fast, err_ref)
        assert err_ref < 1e-5 * exact.abs().max().item()


@pytest.mark.parametrize('variant', VARIANTS)
def test_model_sdpa_parity_outputs_and_grads(variant):
    torch.manual_seed(0)
    ref = models.Transformer(**SMALL, **VARIANTS[variant], use_sdpa=False)
    fast = models.Transformer(**SMALL, **VARIANTS[variant], use_sdpa=False)
    fast.load_state_dict(ref.state_dict())
    fast.set_sdpa(True)
    g = torch.Generator().manual_seed(1)
    batch = synthetic_train_batch(2, g)
    for key in ('inputs', 'targets'):  # Into the small vocabulary, padding kept.
        batch[key] = torch.where(batch[key] > 0, 3 + batch[key] % 94, 0)
    weights = batch['targets'] > 0
    results = []
    for model in (ref, fast):
        logits = model(
            batch['inputs'], batch['targets'], batch['inputs_position'],
            batch['targets_position'], batch['inputs_segmentation'],
            batch['targets_segmentation'], dropout_rate=0.0,
        )  # fmt: skip
        loss = torch.nn.functional.cross_entropy(logits[weights], batch['targets'][weights])
        loss.backward()
        results.append(logits[weights])
    torch.testing.assert_close(results[1], results[0], **PARITY)
    for (name, p_ref), p_fast in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(p_fast.grad, p_ref.grad, **PARITY, msg=name)


def test_dropout_is_a_forward_argument():
    torch.manual_seed(0)
    model = models.Transformer(**SMALL).train()
    src = torch.randint(1, 97, (2, 8))
    tgt = torch.randint(1, 97, (2, 8))
    torch.testing.assert_close(model(src, tgt, dropout_rate=0.0), model(src, tgt, dropout_rate=0.0))
    assert not torch.allclose(model(src, tgt, dropout_rate=0.3), model(src, tgt, dropout_rate=0.0))
    model.eval()
    torch.testing.assert_close(
        model(src, tgt, dropout_rate=0.3), model(src, tgt, dropout_rate=0.0), rtol=0, atol=0
    )


# ---- decoding ----------------------------------------------------------------------------------
@pytest.mark.parametrize('use_sdpa', [True, False])
@pytest.mark.parametrize('variant', ['base', 'post_ln'])
def test_cached_decode_equals_recomputing_the_prefix(use_sdpa, variant):
    torch.manual_seed(0)
    model = models.Transformer(**SMALL, **VARIANTS[variant], use_sdpa=use_sdpa).eval()
    src = torch.tensor([[5, 6, 7, 2, 0, 0], [8, 9, 10, 11, 12, 2]])
    tgt = torch.randint(3, 97, (2, 7))
    with torch.no_grad():
        memory = model.encoder(src)
        full = model.decoder(tgt, memory, src)  # Teacher forcing: [2, 7, vocab].
        cache = model.decoder.init_cache(memory, src, max_len=10)
        prev = torch.zeros(2, 1, dtype=torch.long)
        for i in range(tgt.shape[1]):
            step, cache = model.decoder.decode_step(prev, cache)
            torch.testing.assert_close(step, full[:, i], **PARITY, msg=f'position {i}')
            prev = tgt[:, i : i + 1]


class _ToyModel:
    """A Markov 'decoder': next-token logits depend on the previous token only; sharp."""

    def __init__(self, vocab=11, sharpness=30.0, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.table = sharpness * torch.randn(vocab, vocab, generator=g)
        self.table[:, 0] = -1e4  # Never emit padding.

    def __call__(self, ids, cache):
        cache = {'steps': cache['steps'] + 1, 'rows': cache['rows']}
        return self.table[ids[:, 0]], cache


def _truncate(seq):
    seq = seq.tolist()[1:]
    return seq[: seq.index(decode.EOS_ID) + 1] if decode.EOS_ID in seq else seq


@pytest.mark.parametrize('seed', range(4))
def test_beam_of_one_returns_the_greedy_result(seed):
    toy = _ToyModel(seed=seed)
    rows = torch.arange(3)
    greedy = decode.greedy_search(3, toy, {'steps': 0, 'rows': rows}, max_decode_len=12)
    seqs, scores = decode.beam_search(
        3, toy, {'steps': 0, 'rows': rows}, beam_size=1, max_decode_len=12
    )
    assert seqs.shape == (3, 1, 12) and scores.shape == (3, 1)
    for b in range(3):
        assert _truncate(seqs[b, -1]) == _truncate(greedy[b])


def test_beam_of_one_on_the_model_with_sharp_logits():
    torch.manual_seed(0)
    model = models.Transformer(**SMALL).eval()
    with torch.no_grad():
        model.shared_embedding.weight.mul_(8.0)  # Sharper next-token distributions.
        src = torch.randint(3, 97, (2, 6))
        memory = model.encoder(src)
        greedy = decode.greedy_search(
            2, model.decoder.decode_step, model.decoder.init_cache(memory, src, 16),
            max_decode_len=16,
        )  # fmt: skip
        beam, _ = decode.beam_search(
            2, model.decoder.decode_step, model.decoder.init_cache(memory, src, 16),
            beam_size=1, max_decode_len=16, reorder_cache=model.decoder.reorder_cache,
        )  # fmt: skip
    assert [_truncate(s) for s in beam[:, -1]] == [_truncate(s) for s in greedy]


def test_beam_search_on_the_model_sorts_beams_and_reorders_the_cache():
    """Beam 4 with the model's prefix-only cache reorder equals the generic full gather."""
    torch.manual_seed(0)
    model = models.Transformer(**SMALL).eval()
    src = torch.randint(3, 97, (2, 6))
    with torch.no_grad():
        memory = torch.repeat_interleave(model.encoder(src), 4, dim=0)
        raw = torch.repeat_interleave(src, 4, dim=0)
        results = [
            decode.beam_search(
                2, model.decoder.decode_step, model.decoder.init_cache(memory, raw, 12),
                beam_size=4, max_decode_len=12, **kw,
            )
            for kw in ({'reorder_cache': model.decoder.reorder_cache}, {})
        ]  # fmt: skip
    (seqs, scores), (seqs_generic, scores_generic) = results
    assert seqs.shape == (2, 4, 12) and bool((seqs[:, :, 0] == 0).all())
    assert bool((scores[:, 1:] >= scores[:, :-1]).all())  # Best beam last.
    torch.testing.assert_close(seqs, seqs_generic, rtol=0, atol=0)
    torch.testing.assert_close(scores, scores_generic, rtol=0, atol=0)


def test_brevity_penalty_is_upstreams():
    assert decode.brevity_penalty(0.6, 1) == 1.0
    assert decode.brevity_penalty(0.6, 256) == pytest.approx((261 / 6) ** 0.6)
