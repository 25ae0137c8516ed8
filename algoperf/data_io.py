"""Writing a prepared dataset so that it appears only when complete.

`algoperf data` converters (OGBG, LibriSpeech, WMT) build their output in a temporary
directory beside the destination and rename it into place at the end, so an interrupted
or failed conversion never leaves a half-written dataset that a reader would accept.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator


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
      ValueError: unreadable JSON, or another format or version (rerun `tool`).
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
    except json.JSONDecodeError as e:
        raise ValueError(f'{meta_path}: not valid JSON ({e})') from e
    if meta.get('format') != name or meta.get('version') != version:
        raise ValueError(
            f'{meta_path}: format {meta.get("format")!r} v{meta.get("version")}, expected '
            f'{name!r} v{version}; rerun `{tool}`'
        )
    return meta
