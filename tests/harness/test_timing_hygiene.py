"""Timing hygiene on CPU (issue #16 item 5).

Torch's intra-op threads are chosen per rank and set before the submission and the
workload are built; the threads, CPU and load average are recorded (meta_data_<n>.json,
result.json, profile.json); a machine busier than its cores is one warning line; and
`algoperf bench --quick` tables say they are not for claims, with any bandwidth figure
above 100 % flagged.
"""

import json
import os

import pytest
import torch

from algoperf import bench, cli, registry
from algoperf import runtime as runtime_lib
from algoperf import submission as submission_lib
from algoperf.runtime import Runtime

BASELINE = 'submissions/baselines/nadamw/submission.py'
SPACE = 'submissions/baselines/nadamw/tuning_search_space.json'
CPU = torch.device('cpu')
QUIET_LOAD = [0.1, 0.1, 0.1]
BUSY_LOAD = [999.0, 999.0, 999.0]  # above the logical cores of any machine this runs on


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _run(tmp_path, *flags, name='exp'):
    return cli.main(['run', '--workload=digits', f'--submission_path={BASELINE}', f'--experiment_dir={tmp_path}',
                     f'--experiment_name={name}', '--noprogress', '--max_global_steps=3', '--rng_seed=0',
                     '--save_checkpoints=false', *flags])


def _trial_dir(tmp_path, k=1, name='exp'):
    return tmp_path / name / 'digits_pytorch' / f'trial_{k}'


def _busy_lines(err):
    return [line for line in err.splitlines() if 'busier than its cores' in line]


# ---- choosing the threads ------------------------------------------------------------------------
def test_explicit_num_threads_wins_over_everything():
    runtime = Runtime(CPU, launched_distributed=True, world_size=8, local_world_size=8)
    assert runtime_lib.choose_num_threads(3, runtime, env={'OMP_NUM_THREADS': '1'}) == (3, '--num_threads')


@pytest.mark.parametrize('cores, ranks, expected', [(16, 2, 8), (2, 1, 2), (2, 4, 1), (7, 2, 3), (1, 1, 1)])
def test_auto_divides_the_usable_cores_by_the_ranks_on_this_node(monkeypatch, cores, ranks, expected):
    monkeypatch.setattr(runtime_lib, 'usable_cores', lambda: cores)
    runtime = Runtime(CPU, world_size=ranks * 2, local_world_size=ranks, launched_distributed=ranks > 1)
    threads, source = runtime_lib.choose_num_threads(0, runtime, env={})
    assert threads == expected
    assert f'{cores} usable core(s) / {ranks} rank(s)' in source


def test_auto_honours_omp_num_threads_in_a_single_process_but_not_under_torchrun(monkeypatch):
    monkeypatch.setattr(runtime_lib, 'usable_cores', lambda: 16)
    single = Runtime(CPU)
    assert runtime_lib.choose_num_threads(0, single, env={'OMP_NUM_THREADS': '3'}) == (3, 'OMP_NUM_THREADS')
    assert runtime_lib.choose_num_threads(0, single, env={'OMP_NUM_THREADS': 'x'})[0] == 16
    # torchrun sets OMP_NUM_THREADS=1 for every multi-process launch: it is not the user's choice.
    ddp = Runtime(CPU, world_size=2, local_world_size=2, launched_distributed=True)
    assert runtime_lib.choose_num_threads(0, ddp, env={'OMP_NUM_THREADS': '1'})[0] == 8


def test_local_world_size_comes_from_torchrun():
    env = {'LOCAL_RANK': '1', 'RANK': '5', 'WORLD_SIZE': '8', 'LOCAL_WORLD_SIZE': '4'}
    assert Runtime.from_env(env=env, device='cpu').local_world_size == 4
    assert Runtime.from_env(env={}, device='cpu').local_world_size == 1
    # Launched without LOCAL_WORLD_SIZE (an older launcher): all ranks are assumed local.
    assert Runtime.from_env(env={'LOCAL_RANK': '0', 'WORLD_SIZE': '2'}, device='cpu').local_world_size == 2


def test_busy_warning_only_above_the_logical_cores():
    cores = os.cpu_count()
    assert runtime_lib.busy_machine_warning('x', [float(cores), 0.0, 0.0]) is None
    assert runtime_lib.busy_machine_warning('x', None) is None
    line = runtime_lib.busy_machine_warning('trial_1 start', [cores + 0.5, 0.0, 0.0])
    assert line.startswith('trial_1 start: ') and f'{cores + 0.5:.2f}' in line and '\n' not in line


# ---- algoperf run --------------------------------------------------------------------------------
def test_threads_are_set_before_the_submission_and_workload_are_built(tmp_path, monkeypatch, capsys):
    seen = []
    load, get_workload = submission_lib.load, registry.get_workload
    monkeypatch.setattr(submission_lib, 'load', lambda *a, **k: (seen.append(torch.get_num_threads()), load(*a, **k))[1])
    monkeypatch.setattr(registry, 'get_workload',
                        lambda *a, **k: (seen.append(torch.get_num_threads()), get_workload(*a, **k))[1])
    torch.set_num_threads(1)
    assert _run(tmp_path, '--tuning_ruleset=self', '--num_threads=2') == 0
    assert len(seen) >= 3 and set(seen) == {2}  # load, the probe workload, the trial's workload
    meta = json.loads((_trial_dir(tmp_path) / 'meta_data_0.json').read_text())
    assert meta['torch_num_threads'] == 2 and meta['torch_num_threads_source'] == '--num_threads'
    assert meta['cpu_count_logical'] == os.cpu_count()
    assert meta['cpu_count_usable'] == runtime_lib.usable_cores()
    assert meta['cpu_count_physical'] is None or 1 <= meta['cpu_count_physical'] <= os.cpu_count()
    assert 'cpu_model_name' in meta
    assert len(meta['load_average_start']) == 3
    result = json.loads((_trial_dir(tmp_path) / 'result.json').read_text())
    assert result['torch_num_threads'] == 2
    assert result['load_average_start'] == meta['load_average_start']
    assert len(result['load_average_end']) == 3


def test_bad_num_threads_is_one_line(tmp_path, capsys):
    assert _run(tmp_path, '--tuning_ruleset=self', '--num_threads=-1') == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and '--num_threads=-1' in err[0]
    assert not (tmp_path / 'exp').exists()


def test_busy_machine_is_one_warning_line_per_trial(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runtime_lib, 'load_average', lambda: list(BUSY_LOAD))
    assert _run(tmp_path, f'--tuning_search_space={SPACE}', '--num_tuning_trials=2') == 0
    busy = _busy_lines(capsys.readouterr().err)
    assert len(busy) == 2, busy
    assert 'trial_1 start' in busy[0] and 'trial_2 start' in busy[1]
    assert json.loads((_trial_dir(tmp_path, 2) / 'result.json').read_text())['load_average_end'] == BUSY_LOAD


def test_machine_getting_busy_during_a_trial_warns_at_its_end(tmp_path, monkeypatch, capsys):
    loads = iter([QUIET_LOAD, BUSY_LOAD])
    monkeypatch.setattr(runtime_lib, 'load_average', lambda: list(next(loads)))
    assert _run(tmp_path, '--tuning_ruleset=self') == 0
    busy = _busy_lines(capsys.readouterr().err)
    assert len(busy) == 1 and 'trial_1 end' in busy[0]


def test_quiet_machine_gives_no_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runtime_lib, 'load_average', lambda: list(QUIET_LOAD))
    assert _run(tmp_path, '--tuning_ruleset=self') == 0
    assert _busy_lines(capsys.readouterr().err) == []


# ---- algoperf profile ----------------------------------------------------------------------------
def test_profile_records_threads_cpu_and_load(tmp_path, monkeypatch, capsys):
    loads = iter([QUIET_LOAD, BUSY_LOAD])
    monkeypatch.setattr(runtime_lib, 'load_average', lambda: list(next(loads)))
    code = cli.main(['profile', '--workload=digits', f'--submission={BASELINE}', '--steps=2', '--warmup=0',
                     '--no_eval', '--num_threads=1', f'--output_dir={tmp_path}'])
    assert code == 0
    out = json.loads((tmp_path / 'profile.json').read_text())
    assert out['torch_num_threads'] == 1 and out['torch_num_threads_source'] == '--num_threads'
    assert out['cpu_count_logical'] == os.cpu_count() and 'cpu_model_name' in out
    assert out['load_average_start'] == QUIET_LOAD and out['load_average_end'] == BUSY_LOAD
    captured = capsys.readouterr()
    busy = _busy_lines(captured.err)
    assert len(busy) == 1 and 'profile end' in busy[0]
    assert '1 torch thread(s) (--num_threads)' in captured.out  # the table's host line


def test_profile_bad_num_threads_is_one_line(tmp_path, capsys):
    code = cli.main(['profile', '--workload=digits', f'--submission={BASELINE}', '--steps=2', '--no_eval',
                     '--num_threads=-2', f'--output_dir={tmp_path / "p"}'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and '--num_threads=-2' in err[0]
    assert not (tmp_path / 'p').exists()


# ---- algoperf bench --quick and bandwidth above 100 % ---------------------------------------------
def _bench_json(benchmarks, quick=False, stream_gbps=40.0):
    return {
        'machine_info': {'cpu_model': 'AMD EPYC', 'cpu_count': 2, 'torch_version': '2.13', 'quick': quick,
                         'memory_bandwidth': {'cpu': {'device': 'cpu', 'copy_gbps': stream_gbps,
                                                      'triad_gbps': stream_gbps / 2}}},
        'commit_info': {'id': '0' * 40, 'dirty': False},
        'datetime': '2026-01-01T00:00:00+00:00',
        'benchmarks': benchmarks,
    }


def _b(group, provider, median, **extra):
    return {'group': group, 'name': f'test_x[{provider}]', 'fullname': f'benchmarks/bench_toy.py::test_x[{provider}]',
            'params': {'provider': provider}, 'param': provider, 'extra_info': extra,
            'stats': {'median': median, 'min': median, 'rounds': 2}}


def _row(markdown, provider):
    return next(line for line in markdown.splitlines() if line.startswith(f'| `{provider}`'))


def test_bandwidth_above_100_percent_is_flagged_in_the_table_and_on_stderr(tmp_path, capsys):
    # 40 GB/s probe; 'fast' claims 60 GB/s (150 %), 'fine' 20 GB/s (50 %).
    data = _bench_json([_b('stream', 'fast', 0.01, device='cpu', bytes_moved=600e6),
                        _b('stream', 'fine', 0.03, device='cpu', bytes_moved=600e6)])
    md = bench.render_section('toy', data, 'x.json')
    assert _row(md, 'fast').split('|')[-2].strip() == f'150% {bench.OVER_MARK}'
    assert _row(md, 'fine').split('|')[-2].strip() == '50%'
    assert md.count(bench.OVER_NOTE) == 1
    assert bench.over_bandwidth(data, 'toy') == [('stream', 'fast', '% of streaming BW', pytest.approx(150.0))]
    path = tmp_path / 'x.json'
    path.write_text(json.dumps(data))
    (tmp_path / 'benchmarks').mkdir()
    (tmp_path / 'benchmarks' / 'conftest.py').write_text('')
    assert bench.main(['--repo', str(tmp_path), '--from-json', str(path), '--no-update']) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if 'above 100 %' in line]
    assert len(err) == 1 and '`fast`' in err[0] and '150%' in err[0]


def test_report_columns_naming_bandwidth_are_checked_too():
    data = _bench_json([_b('g', 'a', 1.0, report={'% of copy bandwidth': '112%', '% of 130 ms step': '250%'})])
    md = bench.render_section('toy', data, 'x.json')
    cells = [c.strip() for c in _row(md, 'a').split('|')]
    assert f'112% {bench.OVER_MARK}' in cells and '250%' in cells  # a step share is not a bandwidth
    assert [f[2] for f in bench.over_bandwidth(data, 'toy')] == ['% of copy bandwidth']


def test_quick_tables_say_not_for_claims(capsys):
    data = _bench_json([_b('g1', 'a', 1.0), _b('g2', 'b', 1.0)], quick=True)
    md = bench.render_section('toy', data, 'x.json')
    assert bench.QUICK_BANNER in md.splitlines()[:4]
    assert md.count(bench.QUICK_TABLE_NOTE) == 2  # under each table
    full = bench.render_section('toy', _bench_json([_b('g1', 'a', 1.0)]), 'x.json')
    assert bench.QUICK_BANNER not in full and bench.QUICK_TABLE_NOTE not in full


def test_quick_run_says_not_for_claims_on_the_terminal(tmp_path, monkeypatch, capsys):
    (tmp_path / 'benchmarks').mkdir()
    (tmp_path / 'benchmarks' / 'conftest.py').write_text('')
    (tmp_path / 'benchmarks' / 'bench_toy.py').write_text('')
    data = _bench_json([_b('g', 'a', 1.0)], quick=True)

    def fake_suite(root, relpath, json_path, quick):
        assert quick
        with open(json_path, 'w') as f:
            json.dump(data, f)
        return 0

    monkeypatch.setattr(bench, 'run_suite', fake_suite)
    assert bench.main(['--repo', str(tmp_path), '--quick']) == 0
    captured = capsys.readouterr()
    assert 'NOT for claims' in captured.out.splitlines()[0]
    assert 'toy: quick (smoke) run: these numbers are NOT for claims' in captured.err
    assert bench.QUICK_BANNER in captured.out
