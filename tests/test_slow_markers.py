"""The slow list in tests/conftest.py names tests that exist (a renamed test would silently run in the quick loop)."""

import pathlib
import re

from tests.conftest import SLOW_BY_ID

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_listed_slow_test_exists():
    for node in SLOW_BY_ID:
        path, _, name = node.partition('::')
        func = re.sub(r'\[.*\]$', '', name)
        source = (ROOT / path).read_text()
        assert re.search(rf'^(async )?def {re.escape(func)}\(', source, re.M), node
