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
