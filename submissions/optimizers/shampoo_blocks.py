"""How Shampoo sees a parameter: merged dimensions, blocks, and the tensor contractions.

A parameter of shape (d_1, ..., d_k) is first reshaped by merging neighbouring dimensions
while their product stays <= ``max_preconditioner_dim`` (Distributed Shampoo's
``use_merge_dims``, which the AlgoPerf entry used): a conv kernel (64, 64, 3, 3) becomes
(64, 576), a (2048, 512, 1, 1) one (2048, 512). Each merged dimension is then cut into
chunks of at most ``max_preconditioner_dim``; every combination of chunks is a block, and
a block of order k gets one Kronecker factor per dimension, k factors of sizes d_i x d_i.
So no factor exceeds max_preconditioner_dim^2 (4 MiB in fp32 at 1024).

Contractions for a block G of order k (for k = 2 they are the familiar products):
    factor i:        sum over all other indices of G G   (k = 2: G G^T and G^T G)
    preconditioning: contract index i of G with root_i for each i in turn
                     (k = 2: root_0 G root_1; the roots are symmetric)
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import torch


def merge_dims(shape: tuple[int, ...], max_dim: int) -> tuple[int, ...]:
    """Merges neighbouring dimensions while the product stays <= max_dim; drops size-1 dims.

    Examples at max_dim 1024: (64, 64, 3, 3) -> (64, 576); (2048, 512, 1, 1) ->
    (2048, 512); (20, 30) -> (600,); (10,) -> (10,); () -> ().
    """
    merged: list[int] = []
    for d in (d for d in shape if d != 1):
        if merged and merged[-1] * d <= max_dim:
            merged[-1] *= d
        else:
            merged.append(d)
    return tuple(merged)


@dataclasses.dataclass(frozen=True)
class BlockPlan:
    """The blocks of one parameter.

    Attributes:
        merged_shape: the parameter's shape after ``merge_dims``.
        blocks: per block, one slice per merged dimension.
        preconditioned: False for parameters updated by the grafting method alone: 1-D
            parameters (unless precondition_1d), scalars, and parameters with a dimension
            >= the large-dimension threshold. A small matrix that merges into one dimension
            (20 x 30 -> 600) stays preconditioned, by one full 600 x 600 factor, as in
            Distributed Shampoo.
    """

    merged_shape: tuple[int, ...]
    blocks: tuple[tuple[slice, ...], ...]
    preconditioned: bool

    def block_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(s.stop - s.start for s in b) for b in self.blocks]


def plan_blocks(
    shape: tuple[int, ...], max_dim: int, large_dim: int, precondition_1d: bool
) -> BlockPlan:
    """Blocks for a parameter of ``shape`` (see the module docstring)."""
    merged = merge_dims(tuple(shape), max_dim)
    preconditioned = (
        (len(shape) >= 2 or precondition_1d)
        and len(merged) >= 1
        and all(d < large_dim for d in shape)
        and math.prod(merged) > 0
    )
    if not preconditioned:
        return BlockPlan(merged, (), False)
    chunks = [[slice(s, min(s + max_dim, d)) for s in range(0, d, max_dim)] for d in merged]
    return BlockPlan(merged, tuple(itertools.product(*chunks)), True)


def factor_contraction(G: torch.Tensor, dim: int) -> torch.Tensor:
    """``sum_{other indices} G G`` for index ``dim``: a (d, d) symmetric PSD matrix."""
    if G.ndim == 1:
        return torch.outer(G, G)
    if G.ndim == 2:
        return G @ G.T if dim == 0 else G.T @ G
    others = [i for i in range(G.ndim) if i != dim]
    return torch.tensordot(G, G, dims=(others, others))


def precondition(G: torch.Tensor, roots: list[torch.Tensor]) -> torch.Tensor:
    """Contracts every index i of G with the symmetric ``roots[i]``."""
    if G.ndim == 1:
        return roots[0] @ G
    if G.ndim == 2:
        return roots[0] @ G @ roots[1]
    for root in roots:
        # tensordot moves the contracted index to the end, so k rounds restore the order.
        G = torch.tensordot(G, root, dims=([0], [0]))
    return G


def root_order(block_order: int, exponent_multiplier: float, inv_root_override: int) -> float:
    """The p of A^(-1/p) for each factor of a block of ``block_order`` dimensions.

    Distributed Shampoo's rule: p = 2k by default (A^(-1/4) for matrices), or
    ``inv_root_override`` when > 0; the exponent 1/p is then multiplied by
    ``exponent_multiplier``.
    """
    p = inv_root_override if inv_root_override > 0 else 2 * block_order
    return p / exponent_multiplier
