"""`digits`: a real dataset that ships inside scikit-learn, so trials need no download.

Data: the UCI optical-recognition handwritten digits as bundled by
scikit-learn (`load_digits`: 1,797 8x8 images, 16 grey levels, 10 classes;
read from the installed package, never fetched). A fixed permutation
(RandomState(0)) splits it into 1,197 train / 300 validation / 300 test images;
pixels are scaled to [0, 1] and standardised with the train-split mean and std.
Model: MLP 64-128-10 with ReLU, upstream-style parameter names.
"""

from __future__ import annotations

import collections

import numpy as np
from torch import nn

from workloads.digits.spec import DIGITS, SPLIT_SEED
from workloads.in_memory_classification import InMemoryClassificationWorkload


def load_splits():
    """(train, validation, test) as (float32 [N,1,8,8], int64 [N]) arrays."""
    from sklearn.datasets import load_digits  # Lazy: only when data is needed.

    images, labels = load_digits(return_X_y=True)
    order = np.random.RandomState(SPLIT_SEED).permutation(len(labels))
    images = images[order].astype(np.float32) / 16.0
    labels = labels[order].astype(np.int64)
    n_train, n_val = DIGITS.num_train_examples, DIGITS.num_validation_examples
    cuts = (slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val, None))
    mean, std = DIGITS.train_mean, DIGITS.train_stddev
    return tuple((((images[c] - mean) / std).reshape(-1, 1, 8, 8), labels[c]) for c in cuts)


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            collections.OrderedDict([
                ('layer1', nn.Linear(64, 128)),
                ('layer1_relu', nn.ReLU()),
                ('layer2', nn.Linear(128, 10)),
            ])
        )

    def forward(self, x):
        return self.net(x.reshape(x.shape[0], -1))


class DigitsWorkload(InMemoryClassificationWorkload):
    input_shape = (1, 8, 8)
    workload_spec = DIGITS

    def _load_split(self, split: str, data_dir: str):
        del data_dir  # Bundled with scikit-learn.
        train, validation, test = load_splits()
        return {'train': train, 'validation': validation, 'test': test}[split]

    def _build_model(self) -> nn.Module:
        return _Model()

    def is_output_params(self, param_key: str) -> bool:
        return param_key in ('net.layer2.weight', 'net.layer2.bias')
