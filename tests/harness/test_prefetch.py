"""algoperf.prefetch.Prefetcher: same items, same order, errors where they belong, stoppable."""

import threading
import time

import pytest

from algoperf.prefetch import Prefetcher


def test_items_order_and_end_are_the_sources():
    items = list(Prefetcher(iter(range(50)), depth=3))
    assert items == list(range(50))
    p = Prefetcher(iter([]))
    with pytest.raises(StopIteration):
        next(p)
    with pytest.raises(StopIteration):  # Stays ended.
        next(p)


def test_runs_ahead_in_another_thread():
    made = []

    def source():
        for i in range(10):
            made.append((i, threading.get_ident()))
            yield i

    p = Prefetcher(source(), depth=2)
    deadline = time.monotonic() + 5
    while len(made) < 3 and time.monotonic() < deadline:  # depth 2 queued + 1 waiting to be put.
        time.sleep(0.01)
    assert len(made) == 3 and all(t != threading.get_ident() for _, t in made)
    assert next(p) == 0
    p.close()


def test_an_error_surfaces_after_the_items_before_it():
    def source():
        yield 1
        yield 2
        raise OSError('disk gone')

    p = Prefetcher(source())
    assert next(p) == 1 and next(p) == 2
    with pytest.raises(OSError, match='disk gone'):
        next(p)


def test_keeps_the_pass_length_and_validates_depth():
    class Eval:
        batches_per_pass = 7

        def __iter__(self):
            return self

        def __next__(self):
            return 0

    p = Prefetcher(Eval())
    assert p.batches_per_pass == 7
    p.close()
    assert not p._thread.is_alive()
    with pytest.raises(ValueError, match='depth'):
        Prefetcher(iter([]), depth=0)
