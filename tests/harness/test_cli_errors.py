"""Bad input: one clear line naming the flag/file/key, exit 2, nothing written."""

import os
import subprocess
import sys

import pytest
import torch

from algoperf import cli
from algoperf.config import ConfigError, RunConfig
from algoperf.experiment import Experiment
from algoperf.progress import Progress
from algoperf.runtime import Runtime

BASELINE = 'submissions/baselines/nadamw/submission.py'
DATA = os.path.join(os.path.dirname(__file__), '..', 'data', 'submissions')


def _run(tmp_path, capsys, *flags):
    code = cli.main(
        [
            'run',
            f'--experiment_dir={tmp_path / "exp"}',
            '--experiment_name=x',
            '--noprogress',
            *flags,
        ]
    )
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    'flags, fragments',
    [
        (
            [
                '--workload=digits',
                f'--submission_path={DATA}/missing_function.py',
                '--tuning_ruleset=self',
            ],
            ['missing_function.py', 'missing required function(s): update_params, data_selection'],
        ),
        (
            [
                '--workload=criteo1tb',
                f'--submission_path={BASELINE}',
                '--tuning_ruleset=self',
                '--data_dir=/nonexistent/criteo',
            ],
            ['--data_dir=/nonexistent/criteo: directory not found (Criteo 1TB)'],
        ),
        (
            [
                '--workload=digits',
                f'--submission_path={BASELINE}',
                '--tuning_ruleset=self',
                '--tuning_search_space=submissions/baselines/nadamw/tuning_search_space.json',
            ],
            ['--tuning_search_space must not be given with --tuning_ruleset=self'],
        ),
        (
            ['--workload=digits', f'--submission_path={BASELINE}'],
            ['--tuning_ruleset=external needs --tuning_search_space'],
        ),
        (
            ['--workload=digit', f'--submission_path={BASELINE}', '--tuning_ruleset=self'],
            ["Unknown workload 'digit'", 'Did you mean digits', 'criteo1tb', 'wmt_glu_tanh'],
        ),
        (
            [
                '--workload=digits',
                f'--submission_path={BASELINE}',
                '--tuning_ruleset=self',
                '--framework=jax',
            ],
            ['--framework=jax', 'PyTorch-only'],
        ),
        (
            ['--workload=digits', '--submission_path=nope/sub.py', '--tuning_ruleset=self'],
            ['--submission_path=nope/sub.py: file not found'],
        ),
        (
            [
                '--workload=mnist',
                f'--submission_path={BASELINE}',
                '--tuning_ruleset=self',
                '--data_dir=/nonexistent/mnist',
            ],
            ['--data_dir=/nonexistent/mnist: directory not found'],
        ),
        (
            [
                '--workload=wmt',
                f'--submission_path={BASELINE}',
                '--tuning_ruleset=self',
                '--data_dir=/nonexistent/wmt',
            ],
            [
                '--data_dir=/nonexistent/wmt: /nonexistent/wmt/wmt_de_en/format.json not found',
                '`algoperf data wmt',
            ],
        ),
        (
            [
                '--workload=digits',
                f'--submission_path={BASELINE}',
                '--tuning_ruleset=self',
                '--max_global_steps=0',
            ],
            ['--max_global_steps=0: must be >= 1'],
        ),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, flags, fragments):
    code, err = _run(tmp_path, capsys, *flags)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err
    assert not (tmp_path / 'exp').exists()


def test_malformed_search_space_names_file_and_key(tmp_path, capsys):
    space = tmp_path / 'space.json'
    space.write_text('{"learning_rate": {"min": 0.1, "max": 0.01, "scaling": "log"}}')
    code, err = _run(
        tmp_path,
        capsys,
        '--workload=digits',
        f'--submission_path={BASELINE}',
        f'--tuning_search_space={space}',
    )
    assert code == 2 and str(space) in err and "key 'learning_rate'" in err
    assert not (tmp_path / 'exp').exists()


def test_missing_mnist_file_is_named(tmp_path, capsys):
    data = tmp_path / 'mnist'
    data.mkdir()
    (data / 'train-images-idx3-ubyte.gz').write_bytes(b'')
    code, err = _run(
        tmp_path,
        capsys,
        '--workload=mnist',
        f'--submission_path={BASELINE}',
        '--tuning_ruleset=self',
        f'--data_dir={data}',
    )
    assert (
        code == 2
        and 'train-labels-idx1-ubyte' in err
        and 'train-images' not in err.split('missing')[1]
    )


def test_batch_size_not_divisible_by_world_size(tmp_path):
    config = RunConfig(
        workload='digits',
        submission_path=f'{DATA}/odd_batch.py',
        tuning_ruleset='self',
        experiment_dir=str(tmp_path / 'exp'),
    )
    runtime = Runtime(
        torch.device('cpu'), rank=0, local_rank=0, world_size=2, launched_distributed=True
    )
    with pytest.raises(
        ConfigError, match=r"get_batch_size\('digits'\) = 63 is not divisible by the world size 2"
    ):
        Experiment(config, runtime, Progress(enabled=False))
    assert not (tmp_path / 'exp').exists()


def test_existing_experiment_dir_needs_overwrite_or_resume(tmp_path, capsys):
    flags = [
        '--workload=digits',
        f'--submission_path={BASELINE}',
        '--tuning_ruleset=self',
        '--max_global_steps=2',
    ]
    assert _run(tmp_path, capsys, *flags)[0] == 0
    code, err = _run(tmp_path, capsys, *flags)
    assert code == 2 and 'already exists: pass --resume_last_run' in err
    assert _run(tmp_path, capsys, *flags, '--overwrite')[0] == 0


def test_cli_subprocess_exit_code_and_single_line():
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'algoperf',
            'run',
            '--workload=nope',
            f'--submission_path={BASELINE}',
            '--experiment_dir=/tmp/never-created-by-algoperf',
            '--tuning_ruleset=self',
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("algoperf run: error: Unknown workload 'nope'")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not os.path.exists('/tmp/never-created-by-algoperf')


def test_get_batch_size_value_error_retries_base_name():
    from algoperf import registry, submission

    sub = submission.load(BASELINE)
    name = 'imagenet_resnet_large_bn_init'  # Not in the baseline's table; its base is.
    with pytest.raises(ValueError):
        sub.get_batch_size(name)
    assert sub.batch_size(name, registry.get_base_workload_name(name)) == 1024
    with pytest.raises(ValueError, match='Unsupported workload name: mnistt'):
        sub.batch_size('mnistt', 'mnistt')
