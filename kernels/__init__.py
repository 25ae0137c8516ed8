"""Fast ops for AlgoPerf, each with a plain-PyTorch reference beside it.

Importing this package has no side effects: the compiled extension ``kernels._C`` is
imported, and custom ops are registered with ``torch.library``, only on first use, and
nothing here touches CUDA, environment variables or logging configuration.
"""

from kernels._ext import ext_available
from kernels.fused_optim import (
    adam_,
    adam_reference,
    schedule_free_adamw_,
    schedule_free_adamw_reference,
    sgd_,
    sgd_reference,
)
from kernels.multi_tensor_l2norm import multi_tensor_l2norm, multi_tensor_l2norm_reference

__all__ = [
    'adam_',
    'adam_reference',
    'ext_available',
    'multi_tensor_l2norm',
    'multi_tensor_l2norm_reference',
    'schedule_free_adamw_',
    'schedule_free_adamw_reference',
    'sgd_',
    'sgd_reference',
]
