"""MNIST in PyTorch: upstream's MLP 784-128-10 with a sigmoid, read from IDX files.

Splits (upstream): train = first 50,000 of the 60,000 training images,
validation = the last 10,000, test = the official 10,000. Inputs are the raw
0-255 pixel values normalised with (x - 0.1307) / 0.3081 (upstream's quirk: the
constants are for [0, 1] pixels), shaped (B, 1, 28, 28) like upstream's NCHW
batches. Parameter names (net.layer1.*, net.layer2.*) are upstream's.
"""

from __future__ import annotations

import collections
import os

import numpy as np
from torch import nn

from workloads.in_memory_classification import InMemoryClassificationWorkload
from workloads.mnist import idx
from workloads.mnist.spec import MNIST


class _Model(nn.Module):
    """Upstream's MNIST MLP. Built with PyTorch's default Linear init, as upstream's
    first trial is (its LeCun re-init only runs when a process reuses the model)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            collections.OrderedDict([
                ('layer1', nn.Linear(28 * 28, 128, bias=True)),
                ('layer1_sig', nn.Sigmoid()),
                ('layer2', nn.Linear(128, 10, bias=True)),
            ])
        )

    def forward(self, x):
        return self.net(x.reshape(x.shape[0], -1))


class MnistWorkload(InMemoryClassificationWorkload):
    input_shape = (1, 28, 28)
    workload_spec = MNIST

    def validate_data_dir(self, data_dir: str) -> None:
        if not os.path.isdir(data_dir):
            raise FileNotFoundError(f'--data_dir={data_dir}: directory not found (MNIST needs the IDX files).')
        missing = idx.missing_files(data_dir)
        if missing:
            raise FileNotFoundError(
                f'--data_dir={data_dir}: missing MNIST file(s) {", ".join(missing)} (or .gz), '
                f'looked in {", ".join(os.path.join(data_dir, s) for s in idx.SUBDIRS)}.'
            )

    def _load_split(self, split: str, data_dir: str):
        self.validate_data_dir(data_dir)
        prefix = 'test' if split == 'test' else 'train'
        count = 10_000 if split == 'test' else 60_000
        images = idx.read(idx.find(data_dir, idx.FILES[f'{prefix}_images']), 2051, count)
        labels = idx.read(idx.find(data_dir, idx.FILES[f'{prefix}_labels']), 2049, count)
        if images.shape[1:] != (28, 28):
            raise idx.IdxFormatError(f'{prefix} images are {images.shape[1:]}, expected (28, 28).')
        if split == 'train':
            images, labels = images[: self.num_train_examples], labels[: self.num_train_examples]
        elif split == 'validation':
            images, labels = images[self.num_train_examples :], labels[self.num_train_examples :]
        x = (images.astype(np.float32) - self.train_mean) / self.train_stddev
        return x[:, None, :, :], labels.astype(np.int64)

    def _build_model(self) -> nn.Module:
        return _Model()

    def is_output_params(self, param_key: str) -> bool:
        # Upstream's list has a typo ('net_layer2.bias'); both real names count here.
        return param_key in ('net.layer2.weight', 'net.layer2.bias')
