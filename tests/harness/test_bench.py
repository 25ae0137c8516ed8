"""`algoperf bench`: suite discovery, markdown tables and the RESULTS.md merge.

The JSON fixtures follow pytest-benchmark 5.x's ``--benchmark-json`` layout (as in
benchmarks/results/*.json), cut down to the fields the report reads plus a few it must
ignore, so the tests need neither timing nor a real benchmark run (except the one
end-to-end test, which runs a trivial benchmark in a throw-away checkout).
"""

import json
import textwrap

import pytest

from algoperf import bench

HAND_WRITTEN_TOP = '# Benchmark results\n\nHand-written intro, keep me.\n\n## A hand-written section\n\n| a | b |\n|---|---|\n'
HAND_WRITTEN_BOTTOM = '\n## Notes after the generated section\n\nAlso keep me.\n'


def _bench(
    group,
    provider,
    median,
    *,
    suite_file='benchmarks/kernels/bench_toy.py',
    rounds=10,
    extra=None,
    other_param=None,
):
    """One benchmark entry shaped like pytest-benchmark's JSON."""
    params = (
        {'provider': provider}
        if other_param is None
        else {'data': other_param, 'provider': provider}
    )
    param = provider if other_param is None else f'{other_param}-{provider}'
    return {
        'group': group,
        'name': f'test_toy[{param}]',
        'fullname': f'{suite_file}::test_toy[{param}]',
        'params': params,
        'param': param,
        'extra_info': dict(extra or {}),
        'options': {
            'disable_gc': False,
            'timer': 'perf_counter',
            'min_rounds': 5,
            'max_time': 1.0,
            'min_time': 5e-06,
            'warmup': False,
        },
        'stats': {
            'min': median * 0.9,
            'max': median * 1.2,
            'mean': median,
            'stddev': median * 0.05,
            'rounds': rounds,
            'median': median,
            'iqr': median * 0.1,
            'q1': median * 0.95,
            'q3': median * 1.05,
            'iqr_outliers': 0,
            'stddev_outliers': 1,
            'outliers': '1;0',
            'ld15iqr': median * 0.9,
            'hd15iqr': median * 1.2,
            'ops': 1 / median,
            'total': median * rounds,
            'data': [median] * rounds,
            'iterations': 1,
        },
    }


def _json(benchmarks, **machine):
    info = {
        'node': 'vm',
        'machine': 'x86_64',
        'python_version': '3.11.7',
        'system': 'Linux',
        'cpu': {'brand_raw': 'AMD EPYC', 'count': 2},
        'cpu_model': 'AMD EPYC',
        'cpu_count': 2,
        'cpu_affinity': 2,
        'memory_bytes': 24 * 2**30,
        'torch_version': '2.13.0+cpu',
        'torch_num_threads': 2,
        'triton_version': 'not installed',
        'dali_version': 'not installed',
        'numpy_version': '2.4.6',
        'pandas_version': '3.1.1',
        'git_sha': '7be702b83fc4ee7803e02a219fa010161150e837',
        'git_dirty': False,
        'kernels_ext_built': True,
        'cuda_available': False,
        'quick': False,
        'memory_bandwidth': {
            'cpu': {
                'device': 'cpu',
                'device_name': None,
                'threads': 2,
                'dtype': 'float32',
                'nbytes_per_array': 2**28,
                'repeats': 10,
                'copy_gbps': 40.0,
                'copy_median_gbps': 38.0,
                'triad_gbps': 32.0,
                'triad_median_gbps': 30.0,
            }
        },
    }
    info.update(machine)
    return {
        'machine_info': info,
        'commit_info': {'id': '7be702b83fc4ee7803e02a219fa010161150e837', 'dirty': False},
        'benchmarks': benchmarks,
        'datetime': '2026-11-21T14:18:28.920604+00:00',
        'version': '5.2.3',
    }


def _table_rows(markdown, group):
    """{provider: [cells...]} of the table under **group**."""
    lines = markdown.splitlines()
    start = lines.index(f'**{group}**') + 2
    header = [c.strip() for c in lines[start].strip('|').split('|')]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith('|'):
            break
        cells = [c.strip() for c in line.strip('|').split('|')]
        rows[cells[0].strip('`')] = dict(zip(header, cells))
    return rows


@pytest.fixture
def repo(tmp_path):
    """A minimal checkout: benchmarks/conftest.py, two suites, a hand-written RESULTS.md."""
    (tmp_path / 'benchmarks' / 'kernels').mkdir(parents=True)
    (tmp_path / 'benchmarks' / 'conftest.py').write_text('')
    (tmp_path / 'benchmarks' / 'kernels' / 'bench_toy.py').write_text('')
    (tmp_path / 'benchmarks' / 'bench_bandwidth.py').write_text('')
    (tmp_path / 'benchmarks' / 'RESULTS.md').write_text(HAND_WRITTEN_TOP)
    return tmp_path


def test_ratios_vs_fastest_and_named_peer():
    data = _json(
        [
            _bench('g', 'ours', 2e-3, extra={'peer': 'upstream'}),
            _bench('g', 'fastest', 1e-3, extra={'peer': 'upstream'}),
            _bench('g', 'upstream', 8e-3, extra={'peer': 'upstream'}),
        ]
    )
    rows = _table_rows(bench.render_section('toy', data, 'x.json'), 'g')
    assert list(rows) == ['fastest', 'ours', 'upstream']  # fastest median first
    assert rows['fastest']['median'] == '**1.00 ms**'  # only the fastest is bold
    assert rows['ours']['median'] == '2.00 ms'
    assert rows['ours']['min'] == '1.80 ms'
    assert rows['ours']['rounds'] == '10'
    assert [r['vs fastest'] for r in rows.values()] == ['1.00x', '2.00x', '8.00x']
    assert [r['vs `upstream`'] for r in rows.values()] == ['0.12x', '0.25x', '1.00x']


def test_one_table_per_group_and_duplicate_providers_use_the_param():
    data = _json(
        [
            _bench('small', 'a', 3e-6, other_param='small'),
            _bench('small', 'b', 1e-6, other_param='small'),
            _bench('big', 'a', 2.0, other_param='big'),
            _bench('mixed', 'a', 1.0, other_param='x'),
            _bench('mixed', 'a', 4.0, other_param='y'),
        ]
    )
    md = bench.render_section('toy', data, 'x.json')
    assert md.count('| provider |') == 3
    assert _table_rows(md, 'small')['a']['median'] == '3.00 µs'
    assert _table_rows(md, 'big')['a']['median'] == '**2.00 s**'
    assert list(_table_rows(md, 'mixed')) == ['x-a', 'y-a']
    assert 'vs `' not in md  # no peer declared, no peer column


def test_per_item_bandwidth_and_report_columns():
    data = _json(
        [
            _bench(
                'steps',
                'runner',
                0.1,
                extra={
                    'items': 1000,
                    'item_unit': 'step',
                    'peer': 'bare',
                    'report': {'% of 130 ms step': '0.077%'},
                },
            ),
            _bench(
                'steps', 'bare', 0.002, extra={'items': 1000, 'item_unit': 'step', 'peer': 'bare'}
            ),
            _bench('stream', 'copy', 0.02, extra={'device': 'cpu', 'bytes_moved': 600e6}),
        ]
    )
    md = bench.render_section('runner_overhead', data, 'x.json')
    steps = _table_rows(md, 'steps')
    assert steps['runner']['per step'] == '100 µs'
    assert steps['bare']['per step'] == '2.00 µs'
    assert steps['runner']['% of 130 ms step'] == '0.077%'
    assert steps['bare']['% of 130 ms step'] == bench.MISSING
    assert steps['runner']['vs `bare`'] == '50.00x'
    stream = _table_rows(md, 'stream')
    # 600 MB in 20 ms = 30 GB/s; the probe's best (copy 40, triad 32) is the denominator.
    assert stream['copy']['GB/s'] == '30.0'
    assert stream['copy']['% of streaming BW'] == '75%'


def test_machine_line():
    line = bench.machine_line(_json([_bench('g', 'a', 1.0)], git_dirty=True, quick=True))
    for fragment in (
        'AMD EPYC, 2 cores',
        '24 GiB',
        'torch 2.13.0+cpu (2 threads)',
        'commit 7be702b (dirty)',
        '`kernels._C` built',
        'streaming bandwidth cpu: copy 40.0, triad 32.0 GB/s',
        'Quick',
    ):
        assert fragment in line
    assert 'triton' not in line  # 'not installed' is left out
    gpu = bench.machine_line(
        _json(
            [_bench('g', 'a', 1.0)],
            gpu_count=8,
            gpu_names=['NVIDIA H100'] * 8,
            cuda_runtime='12.8',
            cuda_driver='570.1',
            kernels_ext_built=False,
        )
    )
    assert '8x NVIDIA H100 (CUDA 12.8, driver 570.1)' in gpu and '`kernels._C` not built' in gpu


def test_merge_appends_then_replaces_and_keeps_hand_written_text():
    text = HAND_WRITTEN_TOP
    once = bench.merge_section(text, 'toy', 'first version')
    begin, end = bench.markers('toy')
    assert once.startswith(HAND_WRITTEN_TOP.rstrip('\n'))
    assert f'{begin}\nfirst version\n{end}' in once
    with_tail = once + HAND_WRITTEN_BOTTOM
    twice = bench.merge_section(with_tail, 'toy', 'second version')
    assert twice.count(begin) == twice.count(end) == 1
    assert 'first version' not in twice and 'second version' in twice
    assert twice == with_tail.replace('first version', 'second version')
    other = bench.merge_section(twice, 'other', 'x')  # other suites' sections are independent
    assert 'second version' in other and other.count('<!-- bench:other:begin -->') == 1


@pytest.mark.parametrize(
    'text',
    [
        '<!-- bench:toy:begin -->\nno end\n',
        '<!-- bench:toy:end -->\n<!-- bench:toy:begin -->\n',
        '<!-- bench:toy:begin -->\n<!-- bench:toy:end -->\n<!-- bench:toy:begin -->\n<!-- bench:toy:end -->\n',
    ],
)
def test_broken_markers_are_an_error(text):
    with pytest.raises(bench.BenchError, match='toy'):
        bench.merge_section(text, 'toy', 'x')


def test_discovery_and_suite_names(repo):
    assert bench.discover_suites(str(repo)) == {
        'bandwidth': 'benchmarks/bench_bandwidth.py',
        'toy': 'benchmarks/kernels/bench_toy.py',
    }
    assert bench.suite_of(_json([_bench('g', 'a', 1.0)])) == 'toy'
    assert bench.find_repo(str(repo / 'benchmarks' / 'kernels')) == str(repo)


def test_from_json_updates_results_md_idempotently(repo, capsys):
    results = repo / 'benchmarks' / 'RESULTS.md'
    path = repo / 'toy.json'
    path.write_text(json.dumps(_json([_bench('g', 'a', 1e-3), _bench('g', 'b', 3e-3)])))
    assert bench.main(['--repo', str(repo), '--from-json', str(path)]) == 0
    first = results.read_text()
    assert first.startswith(HAND_WRITTEN_TOP.rstrip('\n'))
    assert _table_rows(first, 'g')['b']['vs fastest'] == '3.00x'
    results.write_text(first + HAND_WRITTEN_BOTTOM)
    path.write_text(json.dumps(_json([_bench('g', 'a', 1e-3), _bench('g', 'b', 5e-3)])))
    assert bench.main(['--repo', str(repo), '--from-json', str(path)]) == 0
    second = results.read_text()
    assert second.count('<!-- bench:toy:begin -->') == 1 and second.count('| provider |') == 1
    assert _table_rows(second, 'g')['b']['vs fastest'] == '5.00x'
    assert second.startswith(HAND_WRITTEN_TOP.rstrip('\n')) and second.endswith(HAND_WRITTEN_BOTTOM)
    assert 'JSON: `toy.json`' in second  # shown relative to the checkout
    capsys.readouterr()
    assert bench.main(['--repo', str(repo), '--from-json', str(path), '--no-update']) == 0
    assert '| `a` | **1.00 ms**' in capsys.readouterr().out
    assert results.read_text() == second


def test_unknown_suite_is_one_line_exit_2(repo, capsys):
    assert bench.main(['--repo', str(repo), '--suite', 'toy', '--suite', 'nope']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1
    assert "unknown suite 'nope'" in err and 'bandwidth, toy' in err


def test_no_checkout_is_one_line_exit_2(tmp_path, capsys):
    assert bench.main(['--repo', str(tmp_path), '--list']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'no repository checkout found' in err


def test_unreadable_json_is_one_line_exit_2(repo, capsys):
    (repo / 'bad.json').write_text('{not json')
    assert bench.main(['--repo', str(repo), '--from-json', str(repo / 'bad.json')]) == 2
    assert 'cannot read benchmark JSON' in capsys.readouterr().err


def test_list(repo, capsys):
    assert bench.main(['--repo', str(repo), '--list']) == 0
    out = capsys.readouterr().out.split()
    assert out == [
        'bandwidth',
        'benchmarks/bench_bandwidth.py',
        'toy',
        'benchmarks/kernels/bench_toy.py',
    ]


def test_runs_a_suite_and_writes_json_and_section(repo, capsys):
    """End to end: a real pytest-benchmark run of a trivial suite in a throw-away checkout."""
    (repo / 'benchmarks' / 'kernels' / 'bench_toy.py').write_text(
        textwrap.dedent("""
        import pytest

        @pytest.mark.parametrize('provider', ['fast', 'slow'])
        def test_toy(benchmark, provider):
            benchmark.group = 'toy group'
            benchmark.extra_info['peer'] = 'slow'
            n = 10 if provider == 'fast' else 10000
            benchmark.pedantic(lambda: sum(range(n)), rounds=3, iterations=1)
    """)
    )
    assert bench.main(['--repo', str(repo), '--suite', 'toy', '--tag', 'testhost']) == 0
    jsons = list((repo / 'benchmarks' / 'results').glob('toy_testhost_*.json'))
    assert len(jsons) == 1
    md = (repo / 'benchmarks' / 'RESULTS.md').read_text()
    rows = _table_rows(md, 'toy group')
    assert list(rows) == ['fast', 'slow'] and rows['slow']['vs `slow`'] == '1.00x'
    assert md.startswith(HAND_WRITTEN_TOP.rstrip('\n'))
    capsys.readouterr()
    # --quick: JSON to a temp dir, the section printed, RESULTS.md and results/ untouched.
    assert bench.main(['--repo', str(repo), '--suite', 'toy', '--quick']) == 0
    assert '**toy group**' in capsys.readouterr().out
    assert (repo / 'benchmarks' / 'RESULTS.md').read_text() == md
    assert list((repo / 'benchmarks' / 'results').iterdir()) == jsons


def test_library_packages_never_import_benchmarks_or_tests():
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    problems = []
    for package in ('algoperf', 'scoring', 'kernels', 'workloads', 'submissions'):
        for path in (root / package).rglob('*.py'):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                problems += [
                    f'{path.relative_to(root)} imports {n}'
                    for n in names
                    if n.split('.')[0] in ('benchmarks', 'tests', '_harness')
                ]
    assert not problems, problems
