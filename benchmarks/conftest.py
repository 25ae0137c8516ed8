"""pytest setup for benchmarks/: collects ``bench_*.py`` and records the environment.

``pytest benchmarks/`` (or a single ``bench_*.py`` path) runs them; a plain ``pytest`` from
the repository root never does, because pyproject's ``testpaths = ["tests"]`` keeps this
directory, and with it this conftest, out of the default collection. ``algoperf bench``
runs one ``bench_*.py`` file per pytest process and renders the JSON into RESULTS.md.
"""

import pytest
from _harness import environment_info, memory_bandwidth


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


def pytest_benchmark_update_json(config, benchmarks, output_json):
    # The bandwidth probe of each device the benchmarks ran on (extra_info['device'],
    # default 'cpu'), taken after the last benchmark so it never perturbs one; cached, so
    # a suite that already used it as a denominator is not probed twice (~2.5 s on CPU).
    devices = sorted(
        {b.get('extra_info', {}).get('device', 'cpu') for b in output_json['benchmarks']}
    )
    probes = [memory_bandwidth(d) for d in devices]
    output_json['machine_info']['memory_bandwidth'] = {p['device']: p for p in probes}
