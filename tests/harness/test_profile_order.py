"""`algoperf profile` reports its step phases before the eval is timed (issue #16.3).

An eval that fails (or is OOM-killed) after the steps must not lose them: profile.json
holds the step phases (and the eval's error) and the table is printed before the eval.
`--eval_batch_size` sets the timed eval's batch.
"""

import json

import pytest

from algoperf import cli, profiling

BASELINE = 'submissions/baselines/nadamw/submission.py'


def test_step_phases_are_written_and_printed_before_a_failing_eval(tmp_path, monkeypatch, capsys):
    def failing_eval(*args, **kwargs):
        out = json.loads((tmp_path / 'profile.json').read_text())  # Already there.
        assert len(out['per_step']['forward']) == 3 and out['eval_seconds'] is None
        assert 'forward' in capsys.readouterr().out  # The table is already printed.
        raise MemoryError('eval batch does not fit')

    monkeypatch.setattr(profiling, '_time_eval', failing_eval)
    with pytest.raises(MemoryError):
        cli.main(['profile', '--workload=digits', f'--submission={BASELINE}', '--steps=3', '--warmup=1',
                  f'--output_dir={tmp_path}'])
    out = json.loads((tmp_path / 'profile.json').read_text())
    assert set(out['phases']) == set(profiling.PHASES)
    assert len(out['per_step']['forward']) == 3
    assert out['eval_error'] == 'MemoryError: eval batch does not fit'
    assert (tmp_path / 'profile.png').read_bytes()[:4] == b'\x89PNG'


def test_eval_batch_size_flag_sets_the_timed_eval(tmp_path, capsys):
    code = cli.main(['profile', '--workload=digits', f'--submission={BASELINE}', '--steps=3', '--warmup=1',
                     f'--output_dir={tmp_path}', '--eval_batch_size=32', '--eval_batches=2'])
    assert code == 0
    out = json.loads((tmp_path / 'profile.json').read_text())
    assert out['eval_batch_size'] == 32
    # digits: at most 2 batches of 32 per split (eval_train, validation, test).
    assert out['eval_batches_measured'] == 3 * 2 and out['eval_seconds'] > 0
    printed = capsys.readouterr().out
    assert printed.index('forward') < printed.index('one full eval at eval batch 32')


def test_bad_eval_batch_size_is_one_line(tmp_path, capsys):
    code = cli.main(['profile', '--workload=digits', f'--submission={BASELINE}', '--steps=3',
                     f'--output_dir={tmp_path}', '--eval_batch_size=0'])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and '--eval_batch_size=0' in err[0]
