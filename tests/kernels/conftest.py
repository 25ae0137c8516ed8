"""Skips tests marked ``ext`` when the compiled extension ``kernels._C`` is not built.

Kept here rather than in tests/conftest.py so that collecting other test directories never
imports the extension; tests elsewhere that need it can move this hook up a level.
"""

import pytest

from kernels import ext_available


def pytest_runtest_setup(item):
    if item.get_closest_marker('ext') is not None and not ext_available():
        pytest.skip('kernels._C is not built: pip install --no-build-isolation -e .')
