"""ResNet-50 and ViT-S/16 training steps: our speed switches vs the plain (upstream) model.

Run (from the repository root, on a quiet machine)::

    python -m pytest benchmarks/workloads/bench_imagenet_step.py \
        --benchmark-json=benchmarks/results/imagenet_step_<hw>_<yyyymmdd>.json

One round = ``zero_grad()``, forward, cross-entropy (label smoothing 0.1, mean over the
batch), backward, one NAdamW step (the baseline's optimizer), on one synthetic batch of
8 normalised 224 x 224 images (the same batch and initial weights for both providers
of a model). CPU here: per-device batch 8 keeps a round to seconds on 2 cores.

Providers:
    resnet50_plain (peer of resnet50_channels_last): upstream's NCHW model.
    resnet50_channels_last: the workload's ``channels_last=True`` (weights and inputs
        channels-last; oneDNN/cuDNN's preferred layout, no layout conversions per conv).
    vit_s16_plain (peer of vit_s16_sdpa): upstream's explicit softmax(q k^T / sqrt(d)) v.
    vit_s16_sdpa: ``F.scaled_dot_product_attention`` (flash/fused kernels; the default on CUDA).
"""

import pytest
import torch
from _harness import rounds

from submissions.optimizers.nadamw import NAdamW
from workloads.imagenet_resnet import models as resnet
from workloads.imagenet_vit import models as vit

BATCH = 8
ROUNDS = 5
PEERS = {
    'resnet50_plain': None,
    'resnet50_channels_last': 'resnet50_plain',
    'vit_s16_plain': None,
    'vit_s16_sdpa': 'vit_s16_plain',
}


def _model(provider):
    torch.manual_seed(0)
    if provider.startswith('resnet'):
        model = resnet.resnet50()
        if provider.endswith('channels_last'):
            model = model.to(memory_format=torch.channels_last)
        return model
    return vit.ViT(use_sdpa=provider.endswith('sdpa'), **vit.decode_variant('S/16'))


@pytest.mark.parametrize('provider', list(PEERS))
def test_imagenet_train_step(benchmark, provider):
    model = _model(provider)
    opt = NAdamW(model.parameters(), lr=1e-3, betas=(0.95, 0.998), weight_decay=0.08)
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(BATCH, 3, 224, 224, generator=g)
    if provider.endswith('channels_last'):
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    targets = torch.randint(0, 1000, (BATCH,), generator=g)
    model.train()

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(inputs), targets, label_smoothing=0.1)
        loss.backward()
        opt.step()

    family = provider.rsplit('_', 1)[0] if provider.startswith('vit') else 'resnet50'
    benchmark.group = f'{family}_step_b{BATCH}'
    peer = PEERS[provider] or provider
    benchmark.extra_info.update(device='cpu', peer=peer, items=BATCH, item_unit='image')
    benchmark.pedantic(step, rounds=rounds(ROUNDS), warmup_rounds=1, iterations=1)
