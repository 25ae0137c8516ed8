"""`algorithmic_efficiency` (upstream's pre-v0.6 name) and `algoperf.workloads.*` resolve to ours."""

import importlib
import json
import os
import subprocess
import sys

import pytest

DATA = os.path.join(os.path.dirname(__file__), '..', 'data', 'submissions')
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))

# Modules v0.5 submissions import by the old name, and ours they must be.
SAME_MODULES = [
    ('algorithmic_efficiency.spec', 'algoperf.spec'),
    ('algorithmic_efficiency.pytorch_utils', 'algoperf.pytorch_utils'),
    ('algorithmic_efficiency.random_utils', 'algoperf.random_utils'),
    ('algorithmic_efficiency.logger_utils', 'algoperf.logger_utils'),
    ('algorithmic_efficiency.param_utils', 'algoperf.param_utils'),
    ('algorithmic_efficiency.halton', 'algoperf.halton'),
    ('algorithmic_efficiency.checkpoint_utils', 'algoperf.checkpoint_utils'),
    ('algorithmic_efficiency.workloads.workloads', 'algoperf.registry'),
    ('algorithmic_efficiency.workloads.wmt.wmt_pytorch.models', 'workloads.wmt.models'),
    ('algorithmic_efficiency.workloads.ogbg.metrics', 'workloads.ogbg.metrics'),
    ('algoperf.workloads.ogbg.ogbg_pytorch.models', 'workloads.ogbg.models'),
]


@pytest.mark.parametrize('old,new', SAME_MODULES)
def test_old_names_are_the_same_module_objects(old, new):
    import algorithmic_efficiency  # noqa: F401 (installs the finder)

    assert importlib.import_module(old) is importlib.import_module(new)
    assert importlib.import_module(new).__spec__.name == new  # The real module keeps its spec.


def test_spec_classes_are_shared():
    from algorithmic_efficiency import spec as old_spec

    from algoperf import spec

    assert old_spec.TrainingCompleteError is spec.TrainingCompleteError


@pytest.mark.parametrize('name', ['algorithmic_efficiency.workloads.wmt.wmt_jax.models',
                                  'algorithmic_efficiency.interop_utils',
                                  'algorithmic_efficiency.no_such_module'])
def test_names_without_counterpart_say_so(name):
    import algorithmic_efficiency  # noqa: F401

    with pytest.raises(ModuleNotFoundError, match='algoperf-fast'):
        importlib.import_module(name)


def test_fresh_interpreter_loads_an_old_style_submission_via_the_runner(tmp_path):
    """No prior `import algorithmic_efficiency`: `algorithmic_efficiency` must resolve anyway."""
    sub = os.path.join(DATA, 'upstream_v05_style.py')
    cmd = [sys.executable, '-m', 'algoperf', 'run', '--workload=digits', f'--submission_path={sub}',
           '--tuning_ruleset=self', f'--experiment_dir={tmp_path}', '--experiment_name=old',
           '--max_global_steps=20', '--rng_seed=0', '--noprogress']
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / 'old' / 'digits_pytorch' / 'trial_1' / 'result.json').read_text())
    assert result['global_step'] == 20 and result['error'] is None
