"""Writing a prepared dataset so that it appears only when complete, and checking one.

`algoperf data` converters (OGBG, LibriSpeech, WMT) build their output in a temporary
directory beside the destination and rename it into place at the end, so an interrupted
or failed conversion never leaves a half-written dataset that a reader would accept.

Readers check what they open with `check_dtype` / `check_range` / `read_format_file`,
once, raising `algoperf.errors.DataError` (one line naming the file and field; the CLI
prints it and exits 2; a ValueError, so the converters' handlers keep working).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator

from algoperf.errors import DataError


def check_dtype(array, kinds: str, path: str, field: str, expected: str) -> None:
    """DataError unless `array.dtype.kind` is one of `kinds` ('i', 'u', 'f', 'c', ...)."""
    if array.dtype.kind not in kinds:
        raise DataError(f'{path}: {field} has dtype {array.dtype}, expected {expected}')


_RANGE_CHUNK = 1 << 24  # Elements per step of `check_range`: 16M, <= 128 MB of int64 temporaries.


def check_range(array, low: int, high: int, path: str, field: str) -> None:
    """DataError unless every value of the integer `array` is in [low, high).

    Scans in chunks of the first axis, so a memory-mapped column is read once with
    bounded memory; the message gives the first bad row and its value.
    """
    import numpy as np

    flat = array.reshape(len(array), -1) if array.ndim > 1 else array.reshape(-1, 1)
    step = max(1, _RANGE_CHUNK // max(1, flat.shape[1]))
    for start in range(0, len(flat), step):
        block = np.asarray(flat[start : start + step])
        if block.size and (block.min() < low or block.max() >= high):
            row = start + int(np.flatnonzero(((block < low) | (block >= high)).any(axis=1))[0])
            value = flat[row][(flat[row] < low) | (flat[row] >= high)][0]
            raise DataError(f'{path}: {field} row {row} holds {value}, outside [{low}, {high})')


@contextlib.contextmanager
def atomic_directory(final: str) -> Iterator[str]:
    """Yields an empty temporary directory; on success it replaces `final`, on error it goes.

    The temporary directory sits next to `final` (same file system, so the rename is one
    step); an existing `final` is removed only once the new one is complete.
    """
    os.makedirs(os.path.dirname(os.path.abspath(final)), exist_ok=True)
    tmp = f'{final}.tmp-{os.getpid()}'
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_format_file(
    data_dir: str, dataset_dir: str, name: str, version: int, layout: str, tool: str
) -> dict:
    """`<data_dir>/<dataset_dir>/format.json`, checked against the reader's format and version.

    Raises:
      FileNotFoundError: naming the missing file, the expected layout and nothing else.
      DataError: unreadable JSON, or another format or version (rerun `tool`).
    """
    import json

    meta_path = os.path.join(data_dir, dataset_dir, 'format.json')
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(
            f'--data_dir={data_dir}: {meta_path} not found; expected {layout}'
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f'{meta_path}: not valid JSON ({e})') from e
    if not isinstance(meta, dict) or meta.get('format') != name or meta.get('version') != version:
        meta = meta if isinstance(meta, dict) else {}
        raise DataError(
            f'{meta_path}: format {meta.get("format")!r} v{meta.get("version")}, expected '
            f'{name!r} v{version}; rerun `{tool}`'
        )
    return meta
