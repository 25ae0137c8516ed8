"""`algoperf sweep` on the local executor: a digits grid end to end, re-run, resume, failures."""

import json
import os

import pytest

from algoperf import cli, search_space
from algoperf.sweep import grid

SUB = 'submissions/baselines/nadamw/submission.py'
SPACE = 'submissions/baselines/nadamw/tuning_search_space.json'


def sweep(tmp_path, *extra, workloads='digits'):
    return cli.main(['sweep', 'run', f'--submission_path={SUB}', f'--experiment_dir={tmp_path}',
                     f'--tuning_search_space={SPACE}', f'--workloads={workloads}', '--num_studies=1',
                     '--num_tuning_trials=2', *extra, '--', '--max_global_steps=15', '--noprogress'])


def trial(tmp_path, k, workload='digits'):
    return tmp_path / 'nadamw' / 'study_0' / f'{workload}_pytorch' / f'trial_{k}'


@pytest.mark.slow
def test_local_sweep_runs_skips_resumes_and_reports_failures(tmp_path, capsys):
    assert sweep(tmp_path) == 0
    out = capsys.readouterr().out
    assert 'digits' in out and 'ran 2 jobs' in out
    _, jobs = grid.read_job_list(str(tmp_path / 'nadamw' / '.sweep' / 'jobs.json'))
    points = search_space.load(SPACE).generate(2, seed=jobs[0].study_seed)
    for k in (1, 2):
        result = json.loads((trial(tmp_path, k) / 'result.json').read_text())
        assert result['status'] == 'max_global_steps' and result['global_step'] == 15
        assert json.loads((trial(tmp_path, k) / 'hparams.json').read_text()) == dict(points[k - 1]._asdict())

    # Same command again: nothing is launched.
    assert sweep(tmp_path) == 0
    out = capsys.readouterr().out
    assert 'ran 0 jobs, skipped 2 finished' in out

    # An interrupted trial (no result.json, a checkpoint on disk) is resumed, not restarted.
    (trial(tmp_path, 2) / 'result.json').unlink()
    assert cli.main(['sweep', 'status', str(tmp_path / 'nadamw')]) == 0
    assert 'interrupted' in capsys.readouterr().out
    assert sweep(tmp_path) == 0
    capsys.readouterr()
    assert json.loads((trial(tmp_path, 2) / 'result.json').read_text())['preemption_count'] == 1

    # A finished sweep scores (digits against our spec's target); .sweep/ is not read as a study.
    assert cli.main(['sweep', 'score', str(tmp_path / 'nadamw'), f'--output_dir={tmp_path / "scores"}',
                     '--no_plots']) == 0
    captured = capsys.readouterr()
    assert '.sweep' not in captured.out + captured.err
    assert (tmp_path / 'scores' / 'scores.csv').exists()

    # A different grid over the same directory is refused in one line.
    assert cli.main(['sweep', 'run', f'--submission_path={SUB}', f'--experiment_dir={tmp_path}',
                     f'--tuning_search_space={SPACE}', '--workloads=digits', '--num_studies=2']) == 2
    assert 'different sweep' in capsys.readouterr().err


@pytest.mark.slow
def test_one_failing_workload_does_not_stop_the_others(tmp_path, capsys):
    # mnist's IDX files are not in this data dir: its jobs fail; digits' jobs still run.
    code = cli.main(['sweep', 'run', f'--submission_path={SUB}', f'--experiment_dir={tmp_path}',
                     f'--tuning_search_space={SPACE}', '--workloads=mnist,digits', '--num_studies=1',
                     '--num_tuning_trials=1', '--', '--max_global_steps=5', '--noprogress',
                     f'--data_dir={tmp_path / "no_data"}'])
    out = capsys.readouterr().out
    assert code == 1
    failed = [line for line in out.splitlines() if line.startswith('FAILED')]
    assert len(failed) == 1 and 'mnist/study_0/trial_1' in failed[0] and 'job_0.log' in failed[0]
    assert os.path.exists(failed[0].split('log: ')[-1].rstrip(')'))
    assert json.loads((trial(tmp_path, 1) / 'result.json').read_text())['global_step'] == 5


def test_score_refuses_an_unfinished_sweep(tmp_path, capsys):
    assert sweep(tmp_path, '--dry_run') == 0
    assert cli.main(['sweep', 'score', str(tmp_path / 'nadamw'), f'--output_dir={tmp_path / "scores"}']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'not finished' in err[0]
    assert not (tmp_path / 'scores').exists()


def test_status_of_a_directory_without_a_sweep_is_one_line(tmp_path, capsys):
    assert cli.main(['sweep', 'status', str(tmp_path)]) == 2
    assert 'no sweep here' in capsys.readouterr().err


def test_unknown_workload_is_one_line(tmp_path, capsys):
    assert sweep(tmp_path, workloads='digitz') == 2
    assert 'digitz' in capsys.readouterr().err
    assert not (tmp_path / 'nadamw').exists()
