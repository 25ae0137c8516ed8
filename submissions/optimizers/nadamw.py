"""NAdamW: AdamW with Nesterov momentum, as in AlgoPerf's baseline (plain PyTorch).

Update for one parameter p with gradient g at step t (bias-corrected Adam
moments, decoupled weight decay, Nesterov look-ahead on the first moment):

    p   <- p * (1 - lr * wd)
    m   <- b1 * m + (1 - b1) * g
    v   <- b2 * v + (1 - b2) * g^2
    m^  <- (b1 * m + (1 - b1) * g) / (1 - b1^t)
    p   <- p - lr * m^ / (sqrt(v / (1 - b2^t)) + eps)

`NAdamW` is `fused.AdamW(nesterov=True)`: one fused multi-tensor update per step
(upstream loops over tensors in Python, ~13 passes and a host sync per tensor).
`nadamw_reference` is the per-tensor loop in the notation above: the spec the fused
paths are tested against.
"""

from __future__ import annotations

from typing import List

from torch import Tensor

from submissions.optimizers.fused import AdamW


def nadamw_reference(
    params: List[Tensor],
    grads: List[Tensor],
    exp_avgs: List[Tensor],
    exp_avg_sqs: List[Tensor],
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
) -> None:
    """One NAdamW step over lists of tensors, in place; `step` is t >= 1."""
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        p.mul_(1 - lr * weight_decay)
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        m_hat = (beta1 * m + (1 - beta1) * g) / bias_correction1
        denom = (v / bias_correction2).sqrt_().add_(eps)
        p.addcdiv_(m_hat, denom, value=-lr)


class NAdamW(AdamW):
    """AlgoPerf's NAdamW: the fused AdamW update with the Nesterov look-ahead.

    State keys match upstream's (step, exp_avg, exp_avg_sq), so its checkpoints load.
    """

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=1e-2,
        capturable: bool = False,
    ):
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            nesterov=True,
            capturable=capturable,
        )
