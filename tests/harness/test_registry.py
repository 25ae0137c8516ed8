"""Registry names, lazy loading, `algoperf list`, and import hygiene."""

import json
import subprocess
import sys

import pytest

from algoperf import cli, registry
from algoperf.workload_spec import WorkloadKind

# Every name the spec document names (§6 incl. variants, criteo1tb_test, dev workloads), plus ours.
SPEC_NAMES = {
    'finewebedu_lm',
    'criteo1tb',
    'criteo1tb_test',
    'criteo1tb_layernorm',
    'criteo1tb_embed_init',
    'criteo1tb_resnet',
    'fastmri',
    'fastmri_model_size',
    'fastmri_tanh',
    'fastmri_layernorm',
    'imagenet_resnet',
    'imagenet_resnet_silu',
    'imagenet_resnet_gelu',
    'imagenet_resnet_large_bn_init',
    'imagenet_vit',
    'imagenet_vit_glu',
    'imagenet_vit_post_ln',
    'imagenet_vit_map',
    'librispeech_conformer',
    'librispeech_conformer_attention_temperature',
    'librispeech_conformer_layernorm',
    'librispeech_conformer_gelu',
    'librispeech_deepspeech',
    'librispeech_deepspeech_tanh',
    'librispeech_deepspeech_no_resnet',
    'librispeech_deepspeech_norm_and_spec_aug',
    'ogbg',
    'ogbg_gelu',
    'ogbg_silu',
    'ogbg_model_size',
    'wmt',
    'wmt_post_ln',
    'wmt_attention_temp',
    'wmt_glu_tanh',
    'mnist',
    'cifar',
    'digits',
}


def test_all_spec_names_registered():
    assert set(registry.list_workloads()) == SPEC_NAMES
    assert set(registry.list_workloads('base')) == set(registry.BASE_WORKLOADS)


def test_base_workload_names():
    assert registry.get_base_workload_name('wmt_post_ln') == 'wmt'
    assert (
        registry.get_base_workload_name('librispeech_deepspeech_tanh') == 'librispeech_deepspeech'
    )
    assert registry.get_base_workload_name('digits') == 'digits'


def test_unknown_name_lists_known_names():
    with pytest.raises(registry.UnknownWorkloadError) as e:
        registry.get_spec('imagenet_resnett')
    msg = str(e.value)
    assert 'Did you mean imagenet_resnet' in msg
    assert all(name in msg for name in SPEC_NAMES)


def test_get_workload_returns_ready_instance():
    wl = registry.get_workload('digits')
    assert wl.target_metric_name == 'accuracy' and wl.eval_batch_size == 300
    params, state = wl.init_model_fn([0, 0])
    assert state is None and set(wl.param_shapes) == {
        'net.layer1.weight',
        'net.layer1.bias',
        'net.layer2.weight',
        'net.layer2.bias',
    }
    assert wl.is_output_params('net.layer2.weight') and not wl.is_output_params('net.layer1.weight')


def test_unimplemented_workload_says_so():
    spec = registry.get_spec('wmt').variant(name='wmt_unbuilt', impl='workloads.wmt_unbuilt.workload:X')
    registry.register(spec)
    try:
        with pytest.raises(registry.WorkloadNotAvailableError, match='not part of this build'):
            registry.get_workload('wmt_unbuilt')
    finally:
        registry.unregister('wmt_unbuilt')
    assert 'wmt_unbuilt' not in registry.list_workloads()
    with pytest.raises(ValueError, match='built in'):
        registry.unregister('wmt')


def test_list_json(capsys):
    assert cli.main(['list', '--json', '--benchmark_version=0.6']) == 0
    rows = {r['name']: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == SPEC_NAMES
    wmt = rows['wmt']
    assert wmt['base_workload'] == 'wmt' and wmt['target_metric'] == 'validation/bleu'
    assert wmt['validation_target'] == 30.8491 and wmt['test_target'] == 30.7219
    assert (
        wmt['budget_sec'] == 43336 and wmt['eval_period_sec'] == 840 and wmt['step_hint'] == 120000
    )
    assert (
        rows['wmt_post_ln']['base_workload'] == 'wmt' and rows['wmt_post_ln']['kind'] == 'variant'
    )


def test_list_table(capsys):
    assert cli.main(['list', '--kind', 'base', '--benchmark_version=0.6']) == 0
    out = capsys.readouterr().out
    assert (
        'criteo1tb' in out and 'validation/loss ↓' in out and '7,703' in out and 'digits' not in out
    )


IMPORT_CHECK = """
import importlib, os, sys, logging
env_before = dict(os.environ)
handlers_before = list(logging.getLogger().handlers)
for name in {modules!r}:
    importlib.import_module(name)
assert dict(os.environ) == env_before, 'environment changed'
assert logging.getLogger().handlers == handlers_before, 'logging configured'
{extra}
print('ok')
"""


def _check_imports(modules, extra=''):
    code = IMPORT_CHECK.format(modules=modules, extra=extra)
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == 'ok', proc.stderr


def test_contract_and_registry_import_without_torch():
    modules = [
        'algoperf',
        'algoperf.spec',
        'algoperf.registry',
        'algoperf.workload_spec',
        'algoperf.search_space',
        'algoperf.halton',
        'algoperf.config',
    ]
    _check_imports(
        modules,
        extra="""
from algoperf import registry
[registry.get_spec(n) for n in registry.list_workloads()]
assert 'torch' not in sys.modules, 'torch imported'
""",
    )


def test_packages_import_without_side_effects():
    modules = [
        'algoperf',
        'algoperf.cli',
        'algoperf.runner',
        'algoperf.experiment',
        'algoperf.pytorch_utils',
        'workloads',
        'workloads.digits.workload',
        'workloads.mnist.workload',
        'submissions',
        'submissions.baselines.nadamw.submission',
        'kernels',
    ]
    _check_imports(
        modules,
        extra="""
import torch
assert not torch.cuda.is_initialized()
assert 'kernels._C' not in sys.modules
""",
    )


def test_layering_rules():
    """algoperf never imports workloads/submissions; those never import each other."""
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    forbidden = {
        'algoperf': ('workloads', 'submissions'),
        'workloads': ('submissions',),
        'submissions': ('workloads',),
        'kernels': ('algoperf', 'workloads', 'submissions', 'scoring'),
    }
    problems = []
    for package, banned in forbidden.items():
        for path in (root / package).rglob('*.py'):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                for n in names:
                    if n.split('.')[0] in banned:
                        problems.append(f'{path.relative_to(root)} imports {n}')
    assert not problems, problems


def test_kind_values():
    assert registry.get_spec('criteo1tb_test').kind == WorkloadKind.TEST
    assert registry.get_spec('mnist').kind == WorkloadKind.DEV
