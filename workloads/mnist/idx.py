"""Reader for the standard MNIST IDX files (optionally gzipped).

Format (LeCun's page): big-endian int32 magic (2051 images, 2049 labels),
int32 counts and dimensions, then uint8 data. Errors name the file.
"""

from __future__ import annotations

import gzip
import os
import struct
from typing import List, Optional

import numpy as np

FILES = {
    'train_images': 'train-images-idx3-ubyte',
    'train_labels': 'train-labels-idx1-ubyte',
    'test_images': 't10k-images-idx3-ubyte',
    'test_labels': 't10k-labels-idx1-ubyte',
}
# Where people usually keep them: --data_dir itself, torchvision's and upstream's layouts.
SUBDIRS = ('', 'MNIST/raw', 'mnist', 'MNIST')


class IdxFormatError(ValueError):
    """A file that is not a valid IDX file of the expected kind."""


def find(data_dir: str, stem: str) -> Optional[str]:
    """Path of `stem` or `stem.gz` under data_dir's usual places, else None."""
    for sub in SUBDIRS:
        for name in (stem, stem + '.gz'):
            path = os.path.join(data_dir, sub, name)
            if os.path.isfile(path):
                return path
    return None


def missing_files(data_dir: str) -> List[str]:
    return [stem for stem in FILES.values() if find(data_dir, stem) is None]


def read(path: str, expect_magic: int, expect_count: int) -> np.ndarray:
    opener = gzip.open if path.endswith('.gz') else open
    try:
        with opener(path, 'rb') as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise IdxFormatError(f'{path}: cannot read ({e}).') from e
    if len(data) < 8:
        raise IdxFormatError(f'{path}: too short to be an IDX file ({len(data)} bytes).')
    magic, count = struct.unpack('>ii', data[:8])
    if magic != expect_magic:
        raise IdxFormatError(f'{path}: magic number {magic}, expected {expect_magic}.')
    ndim = magic & 0xFF
    dims = struct.unpack(f'>{ndim}i', data[4 : 4 + 4 * ndim])
    if count != expect_count:
        raise IdxFormatError(f'{path}: holds {count} items, expected {expect_count}.')
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise IdxFormatError(f'{path}: {body.size} data bytes, header says {int(np.prod(dims))} (truncated file?).')
    return body.reshape(dims)
