"""The CLI-level check every reader's validation tests make: bad data is one line, exit 2, nothing written."""

from algoperf import cli

# A small-batch NAdamW baseline: the fixtures are a few examples per split.
SUBMISSION = 'tests/data/submissions/tiny_batch_nadamw.py'


def run_refused_line(workload, data_dir, tmp_path, capsys, name='refused') -> str:
    """Run `workload` on `data_dir`; assert exit 2, one error line last, no traceback, no
    experiment directory; return that error line (for the test's own file/field checks)."""
    code = cli.main([
        'run', f'--workload={workload}', f'--submission_path={SUBMISSION}', '--tuning_ruleset=self',
        f'--data_dir={data_dir}', f'--experiment_dir={tmp_path / "exp"}', f'--experiment_name={name}',
        '--noprogress', '--max_global_steps=1', '--torch_compile=false',
    ])  # fmt: skip
    err = capsys.readouterr().err
    # The error is one line (info log lines may precede it), and no traceback.
    (line,) = [x for x in err.splitlines() if x.startswith('algoperf run: error:')]
    assert code == 2 and err.rstrip().splitlines()[-1] == line, err  # Nothing after it.
    assert 'Traceback' not in err, err
    assert not (tmp_path / 'exp' / name).exists()
    return line
