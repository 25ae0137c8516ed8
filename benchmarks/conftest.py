"""pytest setup for benchmarks/: collects ``bench_*.py`` and records the environment.

``pytest benchmarks/`` (or a single ``bench_*.py`` path) runs them; a plain ``pytest`` from
the repository root never does, because pyproject's ``testpaths = ["tests"]`` keeps this
directory, and with it this conftest, out of the default collection.
"""

import pytest
from _harness import environment_info


def pytest_collect_file(parent, file_path):
    # bench_*.py do not match python_files (test_*.py); a path given on the command line
    # is collected by pytest itself, so only pick up the ones found by walking a directory.
    if (
        file_path.suffix == '.py'
        and file_path.name.startswith('bench_')
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info.update(environment_info())
