"""The benchmark version's float32 matmul policy, set by the harness before a submission runs.

AlgoPerf v1.0 made TF32 the default matmul precision for PyTorch and JAX (upstream PR #892,
`algoperf_v1.md` §2.3). Submitters may not change framework settings, so the harness sets it:
on CUDA, `torch.backends.cuda.matmul.allow_tf32` (cuBLAS: ~8x the fp32 FLOP rate on A100/H100
tensor cores, 10-bit mantissa inputs, fp32 accumulation) and `torch.backends.cudnn.allow_tf32`
(convolutions; PyTorch's default is already True). v0.5/v0.6 predate the change and keep
PyTorch's defaults (cuBLAS TF32 off, cuDNN TF32 on). On CPU nothing is set: TF32 is a GPU format.
What is in force is recorded in `meta_data_<n>.json`.
"""

from __future__ import annotations

from typing import Any, Dict

import torch


def apply(rules, device: torch.device) -> Dict[str, Any]:
    """Set the matmul precision of `rules` (a BenchmarkVersion) on `device`; return what to record."""
    if device.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = bool(rules.tf32)
        torch.backends.cudnn.allow_tf32 = True  # PyTorch's default in every version.
    return {
        'benchmark_version': rules.name,
        'benchmark_hardware': rules.hardware,
        'tf32_matmul': bool(torch.backends.cuda.matmul.allow_tf32) if device.type == 'cuda' else False,
        'tf32_cudnn': bool(torch.backends.cudnn.allow_tf32) if device.type == 'cuda' else False,
        'float32_matmul_precision': torch.get_float32_matmul_precision(),
    }
