"""fastMRI U-Net: upstream's parameter counts, name/type trees, init, shapes and dropout.

The counts are derived here from the architecture (3x3 convs without bias, 2x2
transposed convs without bias, one 1x1 output conv with bias, GroupNorm affine pairs
in the layer-norm variant) rather than read off `models.py`; the base's 7,756,097 is
upstream's documented count.
"""

import pytest
import torch
from torch import nn

from algoperf import param_utils, registry, spec
from algoperf.runtime import Runtime
from workloads.fastmri import models

CPU = Runtime(torch.device('cpu'))
T = spec.ParameterType
NAMES = ('fastmri', 'fastmri_model_size', 'fastmri_tanh', 'fastmri_layernorm')


def _workload(name):
    return registry.get_workload(name, runtime=CPU)


def _expected_count(channels, pools, layer_norm):
    """Parameters of upstream's U-Net from its layer list."""

    def conv_block(cin, cout):
        norm = 2 * 2 * cout if layer_norm else 0  # Two GroupNorms, weight + bias each.
        return 9 * cin * cout + 9 * cout * cout + norm

    total, ch = conv_block(1, channels), channels
    for _ in range(pools - 1):
        total += conv_block(ch, 2 * ch)
        ch *= 2
    total += conv_block(ch, 2 * ch)  # Bottleneck.
    for _ in range(pools):
        total += 4 * (2 * ch) * ch  # 2x2 transposed conv, 2ch -> ch.
        total += conv_block(2 * ch, ch)
        ch //= 2
    return total + channels * 1 + 1  # 1x1 output conv with bias.


PARAM_COUNTS = {
    'fastmri': 7_756_097,
    'fastmri_tanh': 7_756_097,
    # + GroupNorm weight and bias, twice per ConvBlock: 4 * (32+64+128+256+512+256+128+64+32).
    'fastmri_layernorm': 7_761_985,
    'fastmri_model_size': _expected_count(64, 3, False),
}


def _meta_model(name):
    with torch.device('meta'):
        return _workload(name)._build_model()


@pytest.mark.parametrize('name', NAMES)
def test_parameter_counts(name):
    model = _meta_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAM_COUNTS[name]
    extra = _workload(name).workload_spec.extra
    expected = _expected_count(
        extra['num_channels'], extra['num_pool_layers'], extra['use_layer_norm']
    )
    assert PARAM_COUNTS[name] == expected


def _expected_tree(pools, layer_norm):
    """Upstream's names in upstream's order (up_conv registered before up_transpose_conv)."""

    def block(prefix):
        tree = {f'{prefix}.conv_layers.0.weight': T.CONV_WEIGHT}
        if layer_norm:  # 'conv' in the name wins over 'norm': typed like conv params.
            tree[f'{prefix}.conv_layers.1.weight'] = T.CONV_WEIGHT
            tree[f'{prefix}.conv_layers.1.bias'] = T.BIAS
        tree[f'{prefix}.conv_layers.4.weight'] = T.CONV_WEIGHT
        if layer_norm:
            tree[f'{prefix}.conv_layers.5.weight'] = T.CONV_WEIGHT
            tree[f'{prefix}.conv_layers.5.bias'] = T.BIAS
        return tree

    tree = {}
    for i in range(pools):
        tree.update(block(f'down_sample_layers.{i}'))
    tree.update(block('conv'))
    for i in range(pools - 1):
        tree.update(block(f'up_conv.{i}'))
    tree.update(block(f'up_conv.{pools - 1}.0'))
    tree[f'up_conv.{pools - 1}.1.weight'] = T.CONV_WEIGHT
    tree[f'up_conv.{pools - 1}.1.bias'] = T.BIAS
    for i in range(pools):
        tree[f'up_transpose_conv.{i}.layers.0.weight'] = T.CONV_WEIGHT
    return tree


@pytest.mark.parametrize('name', NAMES)
def test_parameter_type_tree_matches_upstream_names(name):
    extra = _workload(name).workload_spec.extra
    shapes = param_utils.pytorch_param_shapes(_meta_model(name))
    types = param_utils.pytorch_param_types(shapes)
    expected = _expected_tree(extra['num_pool_layers'], extra['use_layer_norm'])
    assert list(types.items()) == list(expected.items())
    first = shapes['down_sample_layers.0.conv_layers.0.weight'].shape_tuple
    assert tuple(first) == (extra['num_channels'], 1, 3, 3)


def test_variant_modules():
    base, tanh, ln = (_meta_model(n) for n in ('fastmri', 'fastmri_tanh', 'fastmri_layernorm'))
    acts = lambda m, t: sum(isinstance(x, t) for x in m.modules())
    assert acts(base, nn.LeakyReLU) > 0 and acts(base, nn.Tanh) == 0
    assert acts(tanh, nn.Tanh) > 0 and acts(tanh, nn.LeakyReLU) == 0
    assert acts(ln, nn.GroupNorm) == 2 * 9 and acts(ln, nn.InstanceNorm2d) == 4
    group_norm = next(m for m in ln.modules() if isinstance(m, nn.GroupNorm))
    assert group_norm.num_groups == 1 and group_norm.eps == 1e-6 and group_norm.affine
    instance_norm = next(m for m in base.modules() if isinstance(m, nn.InstanceNorm2d))
    assert not instance_norm.affine and not instance_norm.track_running_stats


def test_init_is_truncated_lecun_normal_and_seeded():
    torch.manual_seed(0)
    model = models.UNet()
    w = model.up_conv[1].conv_layers[0].weight  # 3x3 conv 256 -> 128: fan_in 2304.
    std = (1.0 / 2304) ** 0.5 / 0.87962566103423978
    assert float(w.detach().abs().max()) <= 2 * std + 1e-7
    assert float(w.detach().std()) == pytest.approx((1.0 / 2304) ** 0.5, rel=0.02)
    assert bool((model.up_conv[3][1].bias == 0).all())
    torch.manual_seed(0)
    again = models.UNet()
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize('size', [(320, 320), (33, 35)])
def test_forward_shapes_including_odd_sizes(size):
    torch.manual_seed(0)
    model = models.UNet(num_channels=4)
    x = torch.randn(2, 1, *size)
    assert model(x).shape == (2, 1, *size)


def test_dropout_is_a_forward_argument():
    torch.manual_seed(0)
    model = models.UNet(num_channels=4, num_pool_layers=2)
    x = torch.randn(2, 1, 16, 16)
    model.train()
    torch.testing.assert_close(model(x, dropout_rate=0.0), model(x), rtol=0, atol=0)
    assert not torch.equal(model(x, dropout_rate=0.5), model(x))
    model.eval()  # No dropout in eval whatever the rate.
    torch.testing.assert_close(model(x, dropout_rate=0.5), model(x), rtol=0, atol=0)
