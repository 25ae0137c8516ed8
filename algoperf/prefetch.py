"""Run an input iterator one or two batches ahead in a background thread.

Readers that do their work in C, numpy or torch calls (h5py reads, FFTs, gathers) release
the GIL for most of it, so a thread can prepare the next batch while the training step's
kernels run: the step then finds its batch ready instead of waiting for it. Order,
values and exceptions are exactly those of the wrapped iterator (an error surfaces at the
`next()` that would have raised it).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

_END = object()


class Prefetcher(Iterator[Any]):
    """`next()` of `source`, `depth` items ahead.

    Args:
      source: any iterator; consumed only by the background thread.
      depth: items prepared ahead (memory: that many batches). 2 hides one slow batch.

    Attributes copied from `source` when present: `batches_per_pass` (eval queues).
    """

    def __init__(self, source: Iterator[Any], depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f'Prefetcher depth must be >= 1, got {depth}')
        if hasattr(source, 'batches_per_pass'):
            self.batches_per_pass = source.batches_per_pass
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(source,), daemon=True)
        self._thread.start()

    def _run(self, source: Iterator[Any]) -> None:
        try:
            for item in source:
                while not self._stop.is_set():
                    try:
                        self._queue.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._queue.put((_END, None))
        except BaseException as e:  # noqa: BLE001 (handed to the consumer)
            self._queue.put((_END, e))

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        item, error = self._queue.get()
        if item is _END:
            self._done = True
            if error is not None:
                raise error
            raise StopIteration
        return item

    def close(self) -> None:
        """Stops the thread after its current item (it is a daemon either way)."""
        self._stop.set()
        while True:  # Unblock a pending put.
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5)
