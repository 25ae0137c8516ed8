"""Registry of workload names: exact names -> torch-free specs -> lazy classes.

Every upstream name (base workloads, variants, the CI test variant, dev
workloads) is listed here, plus ours (`digits`). A name resolves in two lazy
steps: its torch-free `WorkloadSpec` lives in `workloads/<base>/spec.py`
(importing it pulls in no torch and no data library, so scoring and
`algoperf list` stay light), and the spec's `impl` names the PyTorch class,
imported only by `get_workload`. Importing this module has no side effects.

Unlike upstream there is no substring matching: `get_base_workload_name`
reads the spec's `base_workload` field.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any, Dict, List, Optional

from algoperf.workload_spec import WorkloadKind, WorkloadSpec

# name -> module holding `SPECS: Dict[str, WorkloadSpec]` for that name.
_SPEC_MODULES: Dict[str, str] = {
    # Criteo 1TB DLRM-small.
    'criteo1tb': 'workloads.criteo1tb.spec',
    'criteo1tb_test': 'workloads.criteo1tb.spec',
    'criteo1tb_layernorm': 'workloads.criteo1tb.spec',
    'criteo1tb_embed_init': 'workloads.criteo1tb.spec',
    'criteo1tb_resnet': 'workloads.criteo1tb.spec',
    # fastMRI U-Net.
    'fastmri': 'workloads.fastmri.spec',
    'fastmri_model_size': 'workloads.fastmri.spec',
    'fastmri_tanh': 'workloads.fastmri.spec',
    'fastmri_layernorm': 'workloads.fastmri.spec',
    # ImageNet ResNet-50.
    'imagenet_resnet': 'workloads.imagenet_resnet.spec',
    'imagenet_resnet_silu': 'workloads.imagenet_resnet.spec',
    'imagenet_resnet_gelu': 'workloads.imagenet_resnet.spec',
    'imagenet_resnet_large_bn_init': 'workloads.imagenet_resnet.spec',
    # ImageNet ViT-S/16.
    'imagenet_vit': 'workloads.imagenet_vit.spec',
    'imagenet_vit_glu': 'workloads.imagenet_vit.spec',
    'imagenet_vit_post_ln': 'workloads.imagenet_vit.spec',
    'imagenet_vit_map': 'workloads.imagenet_vit.spec',
    # LibriSpeech Conformer.
    'librispeech_conformer': 'workloads.librispeech_conformer.spec',
    'librispeech_conformer_attention_temperature': 'workloads.librispeech_conformer.spec',
    'librispeech_conformer_layernorm': 'workloads.librispeech_conformer.spec',
    'librispeech_conformer_gelu': 'workloads.librispeech_conformer.spec',
    # LibriSpeech DeepSpeech.
    'librispeech_deepspeech': 'workloads.librispeech_deepspeech.spec',
    'librispeech_deepspeech_tanh': 'workloads.librispeech_deepspeech.spec',
    'librispeech_deepspeech_no_resnet': 'workloads.librispeech_deepspeech.spec',
    'librispeech_deepspeech_norm_and_spec_aug': 'workloads.librispeech_deepspeech.spec',
    # OGBG molpcba GNN.
    'ogbg': 'workloads.ogbg.spec',
    'ogbg_gelu': 'workloads.ogbg.spec',
    'ogbg_silu': 'workloads.ogbg.spec',
    'ogbg_model_size': 'workloads.ogbg.spec',
    # FineWeb-Edu decoder-only LM (v1.0).
    'finewebedu_lm': 'workloads.finewebedu_lm.spec',
    # WMT Transformer.
    'wmt': 'workloads.wmt.spec',
    'wmt_post_ln': 'workloads.wmt.spec',
    'wmt_attention_temp': 'workloads.wmt.spec',
    'wmt_glu_tanh': 'workloads.wmt.spec',
    # Development workloads.
    'mnist': 'workloads.mnist.spec',
    'cifar': 'workloads.cifar.spec',
    # Ours: a real dataset bundled with scikit-learn, for offline quick starts.
    'digits': 'workloads.digits.spec',
}

# Specs added at run time by `register` (e.g. a user's own workload).
_EXTRA_SPECS: Dict[str, WorkloadSpec] = {}

BASE_WORKLOADS = (
    'criteo1tb',
    'fastmri',
    'imagenet_resnet',
    'imagenet_vit',
    'librispeech_conformer',
    'librispeech_deepspeech',
    'finewebedu_lm',  # v1.0 only (algoperf.benchmark_versions says which version scores what).
    'ogbg',
    'wmt',
)


class UnknownWorkloadError(ValueError):
    """A workload name that is not registered."""


class WorkloadNotAvailableError(RuntimeError):
    """A registered workload whose implementation is missing from this build."""


def list_workloads(kind: Optional[WorkloadKind | str] = None) -> List[str]:
    """Sorted registered names, optionally only of one `WorkloadKind`."""
    names = sorted(set(_SPEC_MODULES) | set(_EXTRA_SPECS))
    if kind is None:
        return names
    kind = WorkloadKind(kind)
    return [n for n in names if get_spec(n).kind == kind]


def _unknown(name: str) -> UnknownWorkloadError:
    known = list_workloads()
    close = difflib.get_close_matches(name, known, n=3)
    hint = f' Did you mean {", ".join(close)}?' if close else ''
    return UnknownWorkloadError(
        f'Unknown workload {name!r}.{hint} Known workloads: {", ".join(known)}.'
    )


def get_spec(name: str) -> WorkloadSpec:
    """The torch-free `WorkloadSpec` of a registered name."""
    if name in _EXTRA_SPECS:
        return _EXTRA_SPECS[name]
    if name not in _SPEC_MODULES:
        raise _unknown(name)
    module = importlib.import_module(_SPEC_MODULES[name])
    try:
        return module.SPECS[name]
    except (AttributeError, KeyError) as e:
        raise RuntimeError(
            f'Registry is inconsistent: {_SPEC_MODULES[name]}.SPECS has no entry {name!r}.'
        ) from e


def get_base_workload_name(name: str) -> str:
    """Base workload of a name (upstream's helper, without substring matching)."""
    return get_spec(name).base_workload


def register(spec: WorkloadSpec, overwrite: bool = False) -> None:
    """Register a workload defined outside this package (by its spec)."""
    if not overwrite and (spec.name in _SPEC_MODULES or spec.name in _EXTRA_SPECS):
        raise ValueError(f'Workload {spec.name!r} is already registered.')
    _EXTRA_SPECS[spec.name] = spec


def unregister(name: str) -> None:
    """Remove a workload added with `register` (built-in workloads stay)."""
    if name in _SPEC_MODULES and name not in _EXTRA_SPECS:
        raise ValueError(f'Workload {name!r} is built in; only registered ones can be removed.')
    _EXTRA_SPECS.pop(name, None)


def get_workload_class(name: str) -> type:
    """Import and return the class implementing a registered workload."""
    spec = get_spec(name)
    module_name, _, class_name = spec.impl.partition(':')
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        # Only a missing implementation module means "not in this build"; a
        # missing third-party dependency inside it is reported as such.
        if e.name and module_name.startswith(e.name):
            raise WorkloadNotAvailableError(
                f'Workload {name!r} is registered, but its implementation '
                f'({module_name}) is not part of this build yet.'
            ) from e
        raise WorkloadNotAvailableError(
            f'Workload {name!r} needs the Python package {e.name!r}, which is not installed.'
        ) from e
    cls = getattr(module, class_name, None)
    if cls is None or not inspect.isclass(cls):
        raise WorkloadNotAvailableError(
            f'Workload {name!r}: {module_name} defines no class {class_name!r}.'
        )
    return cls


def get_workload(name: str, benchmark_version: Optional[str] = None, **kwargs: Any):
    """A ready `Workload` instance for a registered name.

    Args:
      name: registry name, e.g. 'mnist' or 'wmt_post_ln'.
      benchmark_version: apply that version's budget, eval period and step hint
        (`algoperf.benchmark_versions`); None keeps the spec as registered.
      **kwargs: passed to the workload constructor (e.g. `runtime=`,
        `tokenizer_vocab_path=` for LibriSpeech).
    """
    workload = get_workload_class(name)(**kwargs)
    spec = get_spec(name)
    if benchmark_version is not None:
        from algoperf import benchmark_versions  # noqa: PLC0415

        spec = benchmark_versions.apply(spec, benchmark_version)
    # A class may serve several specs (variants defined as data, `register`ed specs).
    if getattr(type(workload), 'workload_spec', spec) is not spec:
        workload.workload_spec = spec
    return workload
