"""Criteo 1TB DLRM models and workload: upstream's parameter tree, init, math, loss, training.

Parameter counts and name/shape/type trees of the full-size variants are taken from
models built on the `meta` device (the real table is 2.15 GB); numerics use small tables.
The upstream reference here is written independently of `models.py`: it draws from torch's
RNG in upstream's order and computes the forward with functional ops.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from algoperf import param_utils, registry, spec
from algoperf.runtime import Runtime
from workloads.criteo1tb import models

CPU = Runtime(torch.device('cpu'))
T = spec.ParameterType

PARAM_COUNTS = {
    'criteo1tb': 539_267_457,
    'criteo1tb_embed_init': 539_267_457,
    # + LayerNorm scale and bias after 3 bottom and 4 top hidden layers and on the 128-d
    # embeddings: 2 * (512 + 256 + 128 + 1024 + 1024 + 512 + 256 + 128) = 7,680.
    'criteo1tb_layernorm': 539_275_137,
    'criteo1tb_resnet': 538_121_473,
    # 65,536 x 128 table + the base MLPs (2,396,545).
    'criteo1tb_test': 10_785_153,
}


def _workload(name):
    return registry.get_workload(name, runtime=CPU)


def _meta_model(name):
    with torch.device('meta'):
        return _workload(name)._build_model()


def _chunks(prefix=''):
    return {f'{prefix}embedding_chunk_{i}': T.WEIGHT for i in range(4)}


def _linears(prefix, indices, suffix=''):
    tree = {}
    for i in indices:
        tree[f'{prefix}.{i}{suffix}.weight'] = T.WEIGHT
        tree[f'{prefix}.{i}{suffix}.bias'] = T.BIAS
    return tree


# Upstream's names in upstream's order with the types its name heuristics give. The
# LayerNorms inside the Sequentials are typed WEIGHT/BIAS (no 'norm'/'ln' in their names);
# only embed_ln is a layer norm to a submission.
EXPECTED_TREES = {
    'criteo1tb': {
        **_chunks(),
        **_linears('bot_mlp', (0, 2, 4)),
        **_linears('top_mlp', (0, 2, 4, 6, 9)),
    },
    'criteo1tb_layernorm': {
        **_chunks(),
        **_linears('bot_mlp', (0, 2, 3, 5, 6, 8)),
        **_linears('top_mlp', (0, 2, 3, 5, 6, 8, 9, 11, 13)),
        'embed_ln.weight': T.LAYER_NORM_SCALE,
        'embed_ln.bias': T.LAYER_NORM_BIAS,
    },
    'criteo1tb_resnet': {
        **_chunks(),
        **_linears('bot_mlp', range(3), '.module.0'),
        **_linears('top_mlp', range(5), '.module.0'),
    },
}


@pytest.mark.parametrize('name', sorted(PARAM_COUNTS))
def test_parameter_counts(name):
    model = _meta_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAM_COUNTS[name]
    rows = _workload(name).vocab_size // 4
    assert all(getattr(model, f'embedding_chunk_{i}').shape == (rows, 128) for i in range(4))


@pytest.mark.parametrize('name', sorted(EXPECTED_TREES))
def test_parameter_type_tree_matches_upstream_names(name):
    shapes = param_utils.pytorch_param_shapes(_meta_model(name))
    types = param_utils.pytorch_param_types(shapes)
    assert list(types.items()) == list(EXPECTED_TREES[name].items())


# ---- independent upstream reference -------------------------------------------------------------
def _reference_init(seed, vocab, bottom, top, *, layer_norm=False, multiplier=None, resnet=False):
    """Upstream's initial weights, by name, from upstream's sequence of RNG draws."""
    torch.manual_seed(seed)
    params = {}
    scale = 1.0 / torch.sqrt(torch.tensor(vocab, dtype=torch.int32))
    if multiplier is not None and not resnet:  # DLRMResNet ignores the multiplier.
        scale = multiplier
    for i in range(4):
        params[f'embedding_chunk_{i}'] = scale * torch.empty(vocab // 4, 128).uniform_(0, 1)

    def linears(dims, fan_in):
        out = []
        for d in dims:
            out.append(nn.Linear(fan_in, d))  # Its default init draws from the RNG too.
            fan_in = d
        return out

    bot = linears(bottom, 13)
    for lin in bot:  # Glorot uniform, then N(0, 1/fan_out) biases.
        limit = math.sqrt(6.0 / (lin.in_features + lin.out_features))
        nn.init.uniform_(lin.weight, -limit, limit)
        nn.init.normal_(lin.bias, 0.0, math.sqrt(1.0 / lin.out_features))
    top_in = 26 * 128 + bottom[-1] if resnet else 506
    top_layers = linears(top, top_in)
    for lin in top_layers:
        std = math.sqrt(2.0 / (lin.in_features + lin.out_features))
        nn.init.normal_(lin.weight, 0.0, std)
        nn.init.normal_(lin.bias, 0.0, math.sqrt(1.0 / lin.out_features))
    if resnet:
        bot_names = [f'bot_mlp.{i}.module.0' for i in range(len(bot))]
        top_names = [f'top_mlp.{i}.module.0' for i in range(len(top))]
    elif layer_norm:
        bot_names = [f'bot_mlp.{3 * i}' for i in range(len(bot))]
        top_names = [f'top_mlp.{3 * i}' for i in range(len(top) - 1)] + ['top_mlp.13']
    else:
        bot_names = [f'bot_mlp.{2 * i}' for i in range(len(bot))]
        top_names = [f'top_mlp.{2 * i}' for i in range(len(top) - 1)] + ['top_mlp.9']
    for name, lin in zip(bot_names + top_names, bot + top_layers):
        params[f'{name}.weight'], params[f'{name}.bias'] = lin.weight.data, lin.bias.data
    if layer_norm:  # LayerNorms start at weight 1, bias 0 (no RNG draws).
        for name, d in zip([f'bot_mlp.{3 * i + 2}' for i in range(len(bot))], bottom):
            params[f'{name}.weight'], params[f'{name}.bias'] = torch.ones(d), torch.zeros(d)
        for name, d in zip([f'top_mlp.{3 * i + 2}' for i in range(len(top) - 1)], top):
            params[f'{name}.weight'], params[f'{name}.bias'] = torch.ones(d), torch.zeros(d)
        params['embed_ln.weight'], params['embed_ln.bias'] = torch.ones(128), torch.zeros(128)
    return params


def _reference_forward(p, x, vocab, bottom, top, *, layer_norm=False, resnet=False):
    """Upstream's eval-mode forward from a name -> tensor dict, in functional ops."""
    batch = x.shape[0]
    h = x[:, :13]
    for i in range(len(bottom)):
        name = f'bot_mlp.{i}.module.0' if resnet else f'bot_mlp.{(3 if layer_norm else 2) * i}'
        out = F.relu(F.linear(h, p[f'{name}.weight'], p[f'{name}.bias']))
        if layer_norm:
            ln = f'bot_mlp.{3 * i + 2}'
            out = F.layer_norm(out, out.shape[-1:], p[f'{ln}.weight'], p[f'{ln}.bias'], 1e-6)
        h = out + h if resnet and i > 0 else out
    ids = x[:, 13:].to(torch.int32).reshape(-1) % vocab
    table = torch.cat([p[f'embedding_chunk_{i}'] for i in range(4)])
    emb = table[ids].reshape(batch, 26, 128)
    if layer_norm:
        emb = F.layer_norm(emb, (128,), p['embed_ln.weight'], p['embed_ln.bias'], 1e-6)
    if resnet:
        h = torch.cat([h, emb.reshape(batch, -1)], dim=1)
    else:
        vecs = torch.cat([h[:, None], emb], dim=1)
        gram = vecs @ vecs.transpose(1, 2)
        r, c = torch.triu_indices(27, 27)
        h = torch.cat([h, gram[:, r, c]], dim=1)
    last = len(top) - 1
    for i in range(len(top)):
        if resnet:
            name = f'top_mlp.{i}.module.0'
        else:
            name = f'top_mlp.{(3 if layer_norm else 2) * i}' if i < last else None
            name = name or ('top_mlp.13' if layer_norm else 'top_mlp.9')
        out = F.linear(h, p[f'{name}.weight'], p[f'{name}.bias'])
        if i < last:
            out = F.relu(out)
            if layer_norm:
                ln = f'top_mlp.{3 * i + 2}'
                out = F.layer_norm(out, out.shape[-1:], p[f'{ln}.weight'], p[f'{ln}.bias'], 1e-6)
        h = out + h if resnet and 0 < i < last else out
    return h


def _inputs(batch, seed=0, id_high=2**26):
    g = torch.Generator().manual_seed(seed)
    dense = torch.log1p(torch.randint(0, 5000, (batch, 13), generator=g).float())
    ids = torch.randint(0, id_high, (batch, 26), generator=g).float()  # float32, as upstream.
    return torch.cat([dense, ids], dim=1)


_BASE_DIMS = {'bottom': (512, 256, 128), 'top': (1024, 1024, 512, 256, 1)}
VARIANTS = {
    'base': {'cls': models.DlrmSmall, **_BASE_DIMS},
    'layernorm': {'cls': models.DlrmSmall, **_BASE_DIMS, 'layer_norm': True},
    'embed_init': {'cls': models.DlrmSmall, **_BASE_DIMS, 'multiplier': 1.0},
    'resnet': {
        'cls': models.DLRMResNet,
        'bottom': (256, 256, 256),
        'top': (256, 256, 256, 256, 1),
        'resnet': True,
    },
}


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_init_and_forward_match_independent_upstream_reference(variant):
    v = dict(VARIANTS[variant])
    cls, bottom, top = v.pop('cls'), v.pop('bottom'), v.pop('top')
    vocab = 1024
    torch.manual_seed(3)
    model = cls(
        vocab, mlp_bottom_dims=bottom, mlp_top_dims=top,
        use_layer_norm=v.get('layer_norm', False),
        embedding_init_multiplier=v.get('multiplier'),
        embedding_lookup=models._concat_lookup,  # The model's math; the op is tested below.
    )  # fmt: skip
    ref = _reference_init(3, vocab, bottom, top, **v)
    state = model.state_dict()
    assert list(state) == list(ref) if variant != 'layernorm' else set(state) == set(ref)
    for name, value in ref.items():
        assert torch.equal(state[name], value), name  # Same RNG draws: bit for bit.
    x = _inputs(16)
    model.eval()
    with torch.no_grad():
        out = model(x, dropout_rate=0.5)  # Eval mode: dropout off.
    assert out.shape == (16, 1)
    refs = {k: v for k, v in v.items() if k in ('layer_norm', 'resnet')}
    expected = _reference_forward(ref, x, vocab, bottom, top, **refs)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


# ---- the lookup: one call, fast op == upstream's cat-then-index ------------------------------
def test_lookup_is_the_kernels_op_when_it_imports():
    try:
        from kernels.chunked_embedding import chunked_embedding
    except ImportError:
        assert models.chunked_embedding is models._concat_lookup
    else:
        assert models.chunked_embedding is chunked_embedding


def _boundary_inputs(vocab, batch=12, seed=1):
    """Ids hitting both sides of every chunk boundary, repeats, and ids above 2**24."""
    x = _inputs(batch, seed=seed)
    rows = vocab // 4
    edges = [0, rows - 1, rows, 2 * rows - 1, 2 * rows, 3 * rows - 1, 3 * rows, vocab - 1]
    x[0, 13 : 13 + len(edges)] = torch.tensor(edges, dtype=torch.float32)
    x[1, 13:] = float(rows)  # One row 26 times: duplicate-gradient accumulation.
    x[2, 13:16] = torch.tensor([2**24 + 1, 39_979_770, vocab + 5], dtype=torch.float32)
    return x


@pytest.mark.parametrize('cls', [models.DlrmSmall, models.DLRMResNet])
def test_fast_lookup_matches_concat_reference_forward_and_backward(cls):
    vocab = 4096
    torch.manual_seed(0)
    fast = cls(vocab)  # Default lookup: models.chunked_embedding.
    ref = cls(vocab, embedding_lookup=models._concat_lookup)
    ref.load_state_dict(fast.state_dict())
    # Two steps, as in training: the second backward may reuse the first's buffers.
    for step in range(2):
        x = _boundary_inputs(vocab, seed=step)
        outs = []
        for model in (fast, ref):
            model.zero_grad(set_to_none=True)
            out = model(x, dropout_rate=0.0)
            out.square().sum().backward()
            outs.append(out)
        assert outs[0].shape == (12, 1)
        # A lookup is a copy, so the forward is bit for bit the reference's.
        torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
        for (name, a), b in zip(fast.named_parameters(), ref.parameters()):
            if name.startswith('embedding_chunk_'):
                # Per-row sums of up to 26 duplicate gradients may be added in another
                # order (fp32: a few ulps of the row's largest partial sum).
                torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-9)
            else:  # Identical gradients flow into the MLPs.
                torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, msg=name)


def test_sparse_indices_keep_upstreams_float32_cast_and_modulo():
    raw = torch.tensor([[0, 5, 65_535, 65_536, 2**24 + 1, 39_979_770]], dtype=torch.int64)
    as_float = raw.to(torch.float32)  # The pipeline's cast: 2**24 + 1 becomes 2**24.
    idx = models.sparse_indices(as_float, 65_536)
    assert idx.dtype == torch.int64
    expected = [0, 5, 65_535, 0, 2**24 % 65_536, int(float(torch.tensor(39_979_770.0))) % 65_536]
    assert idx.tolist() == [expected]
    assert models.sparse_indices(torch.tensor([[2.0**24 + 1]]), 3).item() == 2**24 % 3


def test_dot_interaction_is_the_upper_triangle_with_diagonal():
    assert models.dot_interaction_dim(128, 26) == 506
    dense, sparse = torch.randn(3, 128), torch.randn(3, 26, 128)
    out = models.DotInteract(26)(dense, sparse)
    assert out.shape == (3, 506)
    vecs = torch.cat([dense[:, None], sparse], dim=1)
    pairs = [(i, j) for i in range(27) for j in range(i, 27)]  # Row-major, i <= j.
    assert len(pairs) == 378
    expected = torch.stack([(vecs[:, i] * vecs[:, j]).sum(-1) for i, j in pairs], dim=1)
    torch.testing.assert_close(out[:, :128], dense, rtol=0, atol=0)
    torch.testing.assert_close(out[:, 128:], expected, rtol=1e-5, atol=1e-5)
