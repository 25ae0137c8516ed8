"""A tiny CIFAR-10 data set in the real on-disk layout (python version), for tests.

`<dir>/cifar-10-batches-py/data_batch_1..5` and `test_batch`: pickled dicts with
b'batch_label', b'labels' (list of ints), b'data' (uint8 [N, 3072], channel-major rows)
and b'filenames', as the real files. Each image is a per-class colour plus noise, so a
model can learn the labels. Deterministic in `seed`.
"""

import os
import pickle

import numpy as np

from workloads.cifar.input_pipeline import SUBDIR, TEST_FILE, TRAIN_FILES


def _batch(rng: np.random.Generator, n: int, label: str) -> dict:
    labels = rng.integers(0, 10, n)
    colours = np.linspace(20, 235, 10 * 3).reshape(10, 3)[labels]  # [n, 3]
    images = colours[:, :, None] + rng.normal(0, 30, (n, 3, 32 * 32))
    data = np.clip(np.rint(images), 0, 255).astype(np.uint8).reshape(n, 3072)
    return {
        b'batch_label': label.encode(),
        b'labels': [int(v) for v in labels],
        b'data': data,
        b'filenames': [f'{label}_{i}.png'.encode() for i in range(n)],
    }


def write_cifar_fixture(
    data_dir: str, per_train_file: int = 24, num_test: int = 40, seed: int = 0
) -> str:
    """Write the six files under `<data_dir>/cifar-10-batches-py`; returns that directory.

    The train files hold `5 * per_train_file` images in all (the real set: 50,000).
    """
    rng = np.random.default_rng(seed)
    root = os.path.join(data_dir, SUBDIR)
    os.makedirs(root, exist_ok=True)
    sizes = {**{f: per_train_file for f in TRAIN_FILES}, TEST_FILE: num_test}
    for name, n in sizes.items():
        with open(os.path.join(root, name), 'wb') as f:
            pickle.dump(_batch(rng, n, name), f, protocol=2)
    return root
