"""Issue 18 cases 5-8 (harness side): bad input is one line naming the file/flag, exit 2,
nothing half-written; result.json tells what a failed trial reached; write errors are one line."""

import errno
import json
import os

import pytest

from algoperf import cli, logger_utils

BASELINE = 'submissions/baselines/nadamw/submission.py'
SPACE = 'submissions/baselines/nadamw/tuning_search_space.json'


def _run(tmp_path, capsys, *flags, name='x'):
    code = cli.main(['run', '--workload=digits', f'--experiment_dir={tmp_path / "exp"}',
                     f'--experiment_name={name}', '--noprogress', *flags])
    return code, capsys.readouterr().err.strip()


def _error_line(err):
    lines = [line for line in err.splitlines() if 'error:' in line]
    assert len(lines) == 1 and 'Traceback' not in err, err
    return lines[0]


SELF = [f'--submission_path={BASELINE}', '--tuning_ruleset=self', '--max_global_steps=2', '--rng_seed=0']


# ---- case 6: silent wrong runs -----------------------------------------------------------------
def test_hparam_start_index_past_the_trials(tmp_path, capsys):
    code, err = _run(tmp_path, capsys, f'--submission_path={BASELINE}', f'--tuning_search_space={SPACE}',
                     '--num_tuning_trials=3', '--hparam_start_index=3')
    assert code == 2 and len(err.splitlines()) == 1
    assert '--hparam_start_index=3: past the last trial (this run has 3 trial(s)' in err
    assert not (tmp_path / 'exp').exists()


@pytest.mark.parametrize('change, fragment', [
    (['--rng_seed=1'], "--rng_seed (was 0, now 1"),
    (['--submission_path=tests/data/submissions/small_batch_nadamw.py'], '--submission_path (was'),
])
def test_resume_with_other_settings_is_refused_unless_told(tmp_path, capsys, change, fragment):
    flags = [f'--submission_path={BASELINE}', f'--tuning_search_space={SPACE}', '--num_tuning_trials=1',
             '--max_global_steps=2', '--rng_seed=0', '--save_checkpoints=false']
    assert _run(tmp_path, capsys, *flags)[0] == 0
    result = tmp_path / 'exp' / 'x' / 'digits_pytorch' / 'trial_1' / 'result.json'
    result.unlink()  # Unfinished: the resume would run it.
    changed = [f for f in flags if f.split('=')[0] not in {c.split('=')[0] for c in change}] + change
    code, err = _run(tmp_path, capsys, *changed, '--resume_last_run')
    assert code == 2 and fragment in _error_line(err) and '--resume_anyway' in err
    assert not result.exists()
    code, _ = _run(tmp_path, capsys, *changed, '--resume_last_run', '--resume_anyway')
    assert code == 0 and result.exists()


def test_resume_with_another_search_space_is_refused(tmp_path, capsys):
    space = tmp_path / 'space.json'
    point = json.loads(open(SPACE).read())[0]
    space.write_text(json.dumps([point]))
    flags = [f'--submission_path={BASELINE}', f'--tuning_search_space={space}', '--max_global_steps=2',
             '--rng_seed=0', '--save_checkpoints=false']
    assert _run(tmp_path, capsys, *flags)[0] == 0
    (tmp_path / 'exp' / 'x' / 'digits_pytorch' / 'trial_1' / 'result.json').unlink()
    space.write_text(json.dumps([dict(point, learning_rate=point['learning_rate'] * 2)]))
    code, err = _run(tmp_path, capsys, *flags, '--resume_last_run')
    assert code == 2 and 'hparams.json differs in learning_rate' in _error_line(err)


@pytest.mark.parametrize('name', ['../../outside', '/abs/path', 'a/../../b'])
def test_experiment_name_cannot_leave_experiment_dir(tmp_path, capsys, name):
    code, err = _run(tmp_path, capsys, *SELF, name=name)
    assert code == 2 and f'--experiment_name={name}' in _error_line(err)
    assert not (tmp_path / 'outside').exists() and not (tmp_path / 'exp').exists()


def test_experiment_name_through_a_symlink_out_is_refused(tmp_path, capsys):
    (tmp_path / 'exp').mkdir()
    (tmp_path / 'elsewhere').mkdir()
    os.symlink(tmp_path / 'elsewhere', tmp_path / 'exp' / 'link')
    code, err = _run(tmp_path, capsys, *SELF, name='link')
    assert code == 2 and 'outside --experiment_dir' in _error_line(err)
    assert os.listdir(tmp_path / 'elsewhere') == []


def test_overwrite_never_deletes_through_a_symlink(tmp_path, capsys):
    assert _run(tmp_path, capsys, *SELF, name='real')[0] == 0
    os.symlink(tmp_path / 'exp' / 'real', tmp_path / 'exp' / 'alias')
    code, err = _run(tmp_path, capsys, *SELF, '--overwrite', name='alias')
    assert code == 2 and 'symbolic link' in _error_line(err)
    assert (tmp_path / 'exp' / 'real' / 'digits_pytorch' / 'trial_1' / 'result.json').exists()


# ---- case 7: one-line errors -------------------------------------------------------------------
@pytest.mark.parametrize('source, fragment', [
    ('def get_batch_size(name):\n    return 8 +\n', 'bad.py:2: SyntaxError: invalid syntax'),
    ('import no_such_module_xyz\n', "bad.py:1: ModuleNotFoundError: No module named 'no_such_module_xyz'"),
    ('x = 1\nraise RuntimeError("configured wrong")\n', 'bad.py:2: RuntimeError: configured wrong'),
])
def test_submission_that_fails_to_import(tmp_path, capsys, source, fragment):
    sub = tmp_path / 'bad.py'
    sub.write_text(source)
    code, err = _run(tmp_path, capsys, f'--submission_path={sub}', '--tuning_ruleset=self')
    assert code == 2 and fragment in _error_line(err) and len(err.splitlines()) == 1, err
    assert not (tmp_path / 'exp').exists()


@pytest.mark.parametrize('body, fragment', [
    ('def get_batch_size():\n    return 8\n', "get_batch_size('digits') cannot be called with one workload name"),
    ('def get_batch_size(name):\n    return "32"\n', "returned '32' (str); expected a positive int"),
    ('def get_batch_size(name):\n    return 0\n', 'returned 0; expected a positive int'),
    ('def get_batch_size(name):\n    return 32.0\n', 'returned 32.0 (float)'),
])
def test_wrong_get_batch_size(tmp_path, capsys, body, fragment):
    sub = tmp_path / 'sub.py'
    sub.write_text('from submissions.baselines.nadamw.submission import (data_selection, init_optimizer_state,'
                   ' update_params)\n' + body)
    code, err = _run(tmp_path, capsys, f'--submission_path={sub}', '--tuning_ruleset=self')
    assert code == 2 and str(sub) in _error_line(err) and fragment in err, err
    assert not (tmp_path / 'exp').exists()


def test_read_only_experiment_dir(tmp_path, capsys, monkeypatch):
    real_makedirs = os.makedirs

    def read_only(path, *args, **kwargs):  # Root ignores chmod; EROFS is what a ro mount gives.
        if str(tmp_path / 'exp') in str(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_makedirs(path, *args, **kwargs)

    monkeypatch.setattr(os, 'makedirs', read_only)
    code, err = _run(tmp_path, capsys, *SELF)
    assert code == 2 and 'Read-only file system' in _error_line(err) and str(tmp_path / 'exp') in err


@pytest.mark.parametrize('name, text', [('result.json', '{"trial": 1, "status'), ('hparams.json', '[1, 2')])
def test_corrupt_json_on_resume_is_named(tmp_path, capsys, name, text):
    flags = [f'--submission_path={BASELINE}', f'--tuning_search_space={SPACE}', '--max_global_steps=2',
             '--rng_seed=0', '--save_checkpoints=false']
    assert _run(tmp_path, capsys, *flags)[0] == 0
    path = tmp_path / 'exp' / 'x' / 'digits_pytorch' / 'trial_1' / name
    path.write_text(text)
    code, err = _run(tmp_path, capsys, *flags, '--resume_last_run')
    assert code == 2 and str(path) in _error_line(err) and 'corrupt' in err


def test_eof_at_the_resume_prompt_means_no(tmp_path, capsys, monkeypatch):
    assert _run(tmp_path, capsys, *SELF)[0] == 0

    class ClosedTty:
        def isatty(self):
            return True

        def readline(self):
            return ''  # EOF: input() raises EOFError

    monkeypatch.setattr('sys.stdin', ClosedTty())
    code, err = _run(tmp_path, capsys, *SELF)
    assert code == 2 and 'not resuming' in _error_line(err)


def test_ctrl_c_outside_a_trial_is_one_line_exit_130(tmp_path, capsys, monkeypatch):
    from algoperf import experiment

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment.Experiment, '__init__', interrupted)
    code, err = _run(tmp_path, capsys, *SELF)
    assert code == 130 and err.splitlines()[-1] == 'algoperf run: interrupted (Ctrl-C).' and 'Traceback' not in err


def test_value_error_from_a_data_check_is_one_line(tmp_path, capsys, monkeypatch):
    from workloads.digits.workload import DigitsWorkload

    def check(self, data_dir):
        raise ValueError(f'{data_dir}/digits.npz: field images has dtype float64, expected uint8')

    monkeypatch.setattr(DigitsWorkload, 'validate_data_dir', check, raising=False)
    code, err = _run(tmp_path, capsys, *SELF, '--data_dir=/data')
    assert code == 2 and '/data/digits.npz: field images has dtype' in _error_line(err)
    assert len(err.splitlines()) == 1 and not (tmp_path / 'exp').exists()


# ---- case 5: truthful result.json, atomic writes, temp files ---------------------------------------
RAISE_AT_5 = '''
from submissions.baselines.nadamw.submission import (  # noqa: F401
    data_selection, get_batch_size, init_optimizer_state, prepare_for_eval)
from submissions.baselines.nadamw.submission import update_params as _update_params


def update_params(**kwargs):
    if kwargs['global_step'] == 5:
        raise ValueError('boom at 5')
    return _update_params(**kwargs)
'''


def test_failed_trial_records_what_it_reached(tmp_path, capsys):
    sub = tmp_path / 'raise5.py'
    sub.write_text(RAISE_AT_5)
    code, err = _run(tmp_path, capsys, f'--submission_path={sub}', '--tuning_ruleset=self', '--rng_seed=0')
    assert code == 1
    d = tmp_path / 'exp' / 'x' / 'digits_pytorch' / 'trial_1'
    r = json.loads((d / 'result.json').read_text())
    assert r['status'] == 'failed' and r['error'] == 'ValueError: boom at 5'
    assert r['global_step'] == 5 and r['num_evals'] >= 1 and r['accumulated_submission_time'] > 0
    import pandas as pd

    evals = pd.read_csv(d / 'eval_measurements.csv')
    assert r['num_evals'] == len(evals)
    assert r['accumulated_submission_time'] >= evals['accumulated_submission_time'].iloc[-1]
    assert 'trial_1: failed after 5 steps' in err


def test_enospc_on_result_json_is_one_line_and_leaves_no_temp(tmp_path, capsys, monkeypatch):
    real_replace = os.replace

    def full_disk(src, dst, *args, **kwargs):
        if str(dst).endswith('result.json'):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, 'replace', full_disk)
    code, err = _run(tmp_path, capsys, *SELF)
    assert code == 1 and 'Traceback' not in err
    d = tmp_path / 'exp' / 'x' / 'digits_pytorch' / 'trial_1'
    lines = [line for line in err.splitlines() if 'could not write' in line]
    assert len(lines) == 1 and str(d / 'result.json') in lines[0] and 'No space left on device' in lines[0]
    assert not (d / 'result.json').exists() and not [p for p in d.iterdir() if '.tmp.' in p.name]


def test_enospc_in_checkpoint_save_fails_the_trial_and_leaves_no_temp(tmp_path, capsys, monkeypatch):
    import torch

    real_save = torch.save

    def partial_then_full(obj, f, *args, **kwargs):
        if isinstance(f, str) and '.tmp.' in f:
            with open(f, 'wb') as out:
                out.write(b'x' * 1000)  # Part of the file got out before the disk filled.
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, 'save', partial_then_full)
    code, err = _run(tmp_path, capsys, *SELF)
    d = tmp_path / 'exp' / 'x' / 'digits_pytorch' / 'trial_1'
    r = json.loads((d / 'result.json').read_text())
    assert code == 1 and r['status'] == 'failed' and 'No space left on device' in r['error']
    assert r['global_step'] == 1  # The first eval's checkpoint failed.
    assert not [p for p in d.iterdir() if '.tmp.' in p.name or p.name.startswith('checkpoint_')]


def test_temp_files_of_a_killed_run_are_cleaned_at_the_next_start(tmp_path, capsys):
    assert _run(tmp_path, capsys, *SELF)[0] == 0
    d = tmp_path / 'exp' / 'x' / 'digits_pytorch' / 'trial_1'
    (d / 'result.json').unlink()
    left = ['checkpoint_7.tmp.12345', 'result.json.tmp.999', 'meta_data_0.json.tmp.4', 'measurements.csv.tmp.8']
    for name in left:
        (d / name).write_bytes(b'partial')
    (d / 'notes.tmp.txt').write_text('not ours')
    assert _run(tmp_path, capsys, *SELF, '--resume_last_run')[0] == 0
    assert not [n for n in left if (d / n).exists()] and (d / 'notes.tmp.txt').exists()


def test_write_json_removes_its_temp_on_error(tmp_path, monkeypatch):
    def full(src, dst):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(os, 'replace', full)
    with pytest.raises(OSError):
        logger_utils.write_json(str(tmp_path / 'result.json'), {'a': 1})
    assert os.listdir(tmp_path) == []


def test_real_full_disk_on_a_small_tmpfs(tmp_path, capsys):
    """ENOSPC for real where the machine lets us mount a 1 MiB tmpfs (root); skipped otherwise."""
    import shutil
    import subprocess

    mnt = tmp_path / 'small'
    mnt.mkdir()
    if shutil.which('mount') is None or subprocess.run(
            ['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(mnt)], capture_output=True).returncode != 0:
        pytest.skip('cannot mount a tmpfs here (needs root)')
    try:
        # Leave ~40 KB: less than one digits checkpoint (~120 KB), more than the logs need at first.
        with open(mnt / 'filler', 'wb') as f:
            f.write(b'\0' * (1024 * 1024 - 40 * 1024))
        code = cli.main(['run', '--workload=digits', f'--experiment_dir={mnt}', '--experiment_name=x',
                         '--noprogress', *SELF])
        err = capsys.readouterr().err
        assert code in (1, 2) and 'Traceback' not in err, err[-2000:]
        assert 'No space left on device' in err
        leftovers = [os.path.join(root, n) for root, _, names in os.walk(mnt) for n in names if '.tmp.' in n]
        assert leftovers == []
    finally:
        # Lazy: a log file of the finished run may still be open in this process.
        subprocess.run(['umount', '-l', str(mnt)], check=True)
