"""Parameter shapes and types derived from PyTorch parameter names.

The name heuristics are upstream's (`param_utils.pytorch_param_types`), in the
same order: module attribute names are part of the API, since submissions key
per-type behaviour (no weight decay on biases/norms, Shampoo blocking, ...) on
these types.
"""

from __future__ import annotations

from typing import Dict

from algoperf import spec


def pytorch_param_shapes(model) -> Dict[str, spec.ShapeTuple]:
    """Name -> ShapeTuple for every parameter of an nn.Module."""
    return {k: spec.ShapeTuple(v.shape) for k, v in model.named_parameters()}


def pytorch_param_types(param_shapes: Dict[str, spec.ShapeTuple]) -> Dict[str, spec.ParameterType]:
    """Name -> ParameterType, by substring of the name (upstream's order)."""
    return {name: _param_type(name) for name in param_shapes}


def _param_type(name: str) -> spec.ParameterType:
    t = spec.ParameterType
    if 'bn' in name:
        if 'weight' in name or 'scale' in name:
            return t.BATCH_NORM_SCALE
        if 'bias' in name:
            return t.BATCH_NORM_BIAS
        raise ValueError(f'Unrecognized batch norm parameter: {name}.')
    if 'norm' in name or 'ln' in name:
        if 'weight' in name or 'scale' in name:
            return t.LAYER_NORM_SCALE
        if 'bias' in name:
            return t.LAYER_NORM_BIAS
        raise ValueError(f'Unrecognized layer norm parameter: {name}.')
    if 'conv' in name:
        return t.BIAS if 'bias' in name else t.CONV_WEIGHT
    if ('embedding' in name or 'embed' in name) and 'weight' in name:
        return t.EMBEDDING
    if 'attn' in name or 'attention' in name:
        if 'bias' in name:
            return t.ATTENTION_BIAS
        if 'in_proj' in name:
            return t.ATTENTION_QKV
        if 'qkv' in name:  # v1.0 (finewebedu_lm's fused `w_qkv`; CA param_utils@362cbda).
            return t.ATTENTION_QKV
        if 'kv_proj' in name:
            return t.ATTENTION_KV
        if 'k_proj' in name or 'key' in name:
            return t.ATTENTION_K
        if 'q_proj' in name or 'query' in name:
            return t.ATTENTION_Q
        if 'v_proj' in name or 'value' in name:
            return t.ATTENTION_V
        if 'out' in name and 'weight' in name:
            return t.ATTENTION_OUT
        if 'scale' in name:
            return t.WEIGHT
        raise ValueError(f'Unrecognized attention parameter: {name}.')
    if 'bias' in name:
        return t.BIAS
    return t.WEIGHT
