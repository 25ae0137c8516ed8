"""Sweep grid expansion against upstream's job-config semantics (make_job_config.py)."""

import os
import subprocess
import sys

import pytest

from algoperf import search_space
from algoperf.config import ConfigError
from algoperf.experiment import trial_seed
from algoperf.sweep import grid

SPACE = 'submissions/baselines/nadamw/tuning_search_space.json'
SUB = 'submissions/baselines/nadamw/submission.py'


def make(tmp_path, **kw):
    base = dict(submission_path=SUB, experiment_dir=str(tmp_path), submission_name='nadamw',
                tuning_search_space=SPACE, workloads=('wmt', 'ogbg'), num_studies=3, num_tuning_trials=5, seed=7)
    base.update(kw)
    return grid.SweepConfig(**base)


def arg(job, flag):
    return next(a.split('=', 1)[1] for a in job.argv if a.startswith(f'--{flag}='))


def test_external_counts_order_indices_and_paths(tmp_path):
    cfg = make(tmp_path)
    jobs = grid.expand(cfg)
    assert len(jobs) == 2 * 3 * 5
    assert [(j.workload, j.study, j.hparam_index) for j in jobs[:6]] == (
        [('wmt', 0, k) for k in range(5)] + [('wmt', 1, 0)])
    for j in jobs:
        assert int(arg(j, 'hparam_start_index')) == j.hparam_index
        assert int(arg(j, 'hparam_end_index')) == j.hparam_index + 1
        assert arg(j, 'num_tuning_trials') == '5' and arg(j, 'experiment_name') == f'nadamw/study_{j.study}'
        assert j.trial_dir(cfg) == os.path.join(str(tmp_path), 'nadamw', f'study_{j.study}',
                                                f'{j.workload}_pytorch', f'trial_{j.hparam_index + 1}')
        assert '--resume_last_run' in j.argv


def test_one_seed_per_study_shared_by_its_trials(tmp_path):
    jobs = grid.expand(make(tmp_path))
    by_study = {}
    for j in jobs:
        by_study.setdefault((j.workload, j.study), set()).add(int(arg(j, 'rng_seed')))
    assert all(len(s) == 1 for s in by_study.values())
    seeds = [next(iter(s)) for s in by_study.values()]
    assert len(set(seeds)) == len(seeds) == 6  # Distinct across workloads and studies.


def test_seeds_do_not_depend_on_the_interpreter_hash_seed(tmp_path):
    code = ('from algoperf.sweep.grid import study_seed; '
            'print([study_seed(7, w, s) for w in ("wmt", "ogbg") for s in range(3)])')
    outs = {subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                           env={**os.environ, 'PYTHONHASHSEED': h}).stdout for h in ('1', '2')}
    assert len(outs) == 1
    assert outs.pop().strip() == str([grid.study_seed(7, w, s) for w in ('wmt', 'ogbg') for s in range(3)])


def test_job_j_runs_point_j_of_the_studys_search_with_the_studys_trial_seed(tmp_path):
    """A study's jobs together do exactly what one `algoperf run` of all its trials does."""
    jobs = grid.expand(make(tmp_path, workloads=('wmt',), num_studies=1))
    seed = jobs[0].study_seed
    points = search_space.load(SPACE).generate(5, seed=seed)
    assert [trial_seed(seed, j.hparam_index + 1) for j in jobs] == [trial_seed(seed, k) for k in range(1, 6)]
    assert len({p for p in points}) == len(points)


def test_self_tuning_is_one_job_per_study(tmp_path):
    jobs = grid.expand(make(tmp_path, tuning_ruleset='self', tuning_search_space=None))
    assert len(jobs) == 2 * 3 and all(j.hparam_index == 0 for j in jobs)
    assert all(not any(a.startswith('--hparam_start_index') for a in j.argv) for j in jobs)


def test_job_list_round_trips_and_has_upstreams_keys(tmp_path):
    cfg = make(tmp_path, run_flags=('--data_dir=/data',))
    jobs = grid.expand(cfg)
    path = grid.write_job_list(cfg, jobs)
    cfg2, jobs2 = grid.read_job_list(path)
    assert cfg2 == cfg and jobs2 == jobs
    import json

    entry = json.load(open(path))['jobs']['3']
    for key in ('framework', 'workload', 'experiment_dir', 'hparam_start_index', 'hparam_end_index', 'rng_seed',
                'num_tuning_trials'):
        assert key in entry
    assert jobs[3].argv[-1] == '--data_dir=/data'


@pytest.mark.parametrize('change,flag', [
    (dict(tuning_search_space=None), 'tuning_search_space'),
    (dict(tuning_ruleset='self'), 'tuning_search_space'),
    (dict(num_studies=0), 'num_studies'),
    (dict(submission_name='../x'), 'submission_name'),
    (dict(workloads=()), 'workloads'),
])
def test_bad_grids_name_the_flag(tmp_path, change, flag):
    with pytest.raises(ConfigError, match=flag):
        make(tmp_path, **change)
