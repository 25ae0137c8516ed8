"""DLRM-small and its residual variant for Criteo 1TB, as upstream AlgoPerf v0.6 builds them.

Faithful to `algoperf/workloads/criteo1tb/criteo1tb_pytorch/models.py` (upstream
snapshot 2c90454): module and parameter names (so `param_shapes` and the parameter-type
tree match upstream's), registration order (so optimizers see parameters in upstream's
order), shapes, initialisation and the order in which it draws from torch's global RNG
(so a seed gives upstream's initial weights), the dot interaction, the dropout position
(rate given at forward time) and the layer-norm / embedding-init variants.

One deliberate difference: the embedding lookup. Upstream concatenates the 4 table chunks
into one 2.15 GB tensor every forward and indexes it; here the lookup is one call,
`chunked_embedding(indices, chunks)` from `kernels.chunked_embedding`, which reads rows
straight from the chunks. Fallback: when that module cannot be imported, `_concat_lookup`
(upstream's cat-then-index, also the tests' reference) is used. Both return the same rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from algoperf.pytorch_utils import CustomDropout, SequentialWithDropout

DROPOUT_RATE = 0.0
# Upstream stores the table as 4 Parameters (embedding_chunk_0..3); the count is part of
# the parameter tree submissions see.
NUM_CHUNKS = 4

LookupFn = Callable[[Tensor, list[Tensor]], Tensor]


def _concat_lookup(indices: Tensor, chunks: list[Tensor]) -> Tensor:
    """Upstream's lookup: concatenate the chunks into one table, then gather rows.

    Args:
      indices: int64 row ids in [0, sum of chunk rows), any shape [...].
      chunks: 2-D tensors (rows_i, D) stacked along rows in order.

    Returns:
      [..., D] rows of `torch.cat(chunks)`. Costs a full copy of the table per call
      (2.15 GB forward and a dense gradient of that size backward).
    """
    return torch.cat(chunks, dim=0)[indices]


try:
    from kernels.chunked_embedding import chunked_embedding
except ImportError:  # The fast op is optional; the reference path gives the same rows.
    chunked_embedding = _concat_lookup


def sparse_indices(sparse_features: Tensor, vocab_size: int) -> Tensor:
    """Row ids from the float32 categorical features, exactly as upstream.

    Upstream casts the float32 features to int32 (truncation) and reduces them with
    `% vocab_size` in int32. The ids were cast to float32 by the input pipeline, so ids
    above 2**24 already lost precision there (an upstream quirk kept on purpose).

    Args:
      sparse_features: float32 [B, 26] hashed categorical ids.
      vocab_size: number of table rows.

    Returns:
      int64 [B, 26] row ids in [0, vocab_size).
    """
    return (sparse_features.to(dtype=torch.int32) % vocab_size).long()


class _ChunkedTable:
    """Shared by both models: registers `embedding_chunk_{i}` and looks rows up."""

    def _init_embedding(self, vocab_size: int, embed_dim: int, scale: Tensor | float) -> None:
        assert vocab_size % NUM_CHUNKS == 0
        for i in range(NUM_CHUNKS):
            # Upstream: uninitialised torch.Tensor, uniform_(0, 1), times the scale; same
            # RNG draws and the same float32 products here.
            chunk = nn.Parameter(torch.empty(vocab_size // NUM_CHUNKS, embed_dim))
            with torch.no_grad():
                chunk.uniform_(0, 1)
                chunk.mul_(scale)
            self.register_parameter(f'embedding_chunk_{i}', chunk)

    @property
    def embedding_table_chucks(self) -> list[Tensor]:
        """The chunk Parameters in order (upstream's attribute name, typo included).

        Read from the module each time rather than kept in a list: `to_empty`/`to` may
        replace Parameter objects, which would leave a stored list stale.
        """
        return [getattr(self, f'embedding_chunk_{i}') for i in range(NUM_CHUNKS)]

    def _lookup_sparse(self, sparse_features: Tensor) -> Tensor:
        """[B, 26] float ids -> [B, 26, embed_dim] rows, through the one lookup call."""
        lookup = self.embedding_lookup or chunked_embedding
        return lookup(sparse_indices(sparse_features, self.vocab_size), self.embedding_table_chucks)


def _init_bottom_mlp(mlp: nn.Module) -> None:
    """Glorot-uniform weights, N(0, 1/fan_out) biases (upstream's bottom-MLP init)."""
    for module in mlp.modules():
        if isinstance(module, nn.Linear):
            limit = math.sqrt(6.0 / (module.in_features + module.out_features))
            nn.init.uniform_(module.weight.data, -limit, limit)
            nn.init.normal_(module.bias.data, 0.0, math.sqrt(1.0 / module.out_features))


def _init_top_mlp(mlp: nn.Module) -> None:
    """N(0, 2/(fan_in+fan_out)) weights, N(0, 1/fan_out) biases (upstream's top-MLP init)."""
    for module in mlp.modules():
        if isinstance(module, nn.Linear):
            std = math.sqrt(2.0 / (module.in_features + module.out_features))
            nn.init.normal_(module.weight.data, 0.0, std)
            nn.init.normal_(module.bias.data, 0.0, math.sqrt(1.0 / module.out_features))


def _default_scale(vocab_size: int) -> Tensor:
    # Upstream computes 1 / sqrt(int32 tensor) in float32; same op here, on the CPU so a
    # model built under `torch.device('meta')` gets the same value.
    return 1.0 / torch.sqrt(torch.tensor(vocab_size, dtype=torch.int32, device='cpu'))


class DenseBlock(nn.Module):
    """`module(x)`, plus `x` when `resnet` (upstream's bottom-MLP block of DLRMResNet)."""

    def __init__(self, module: nn.Module, resnet: bool = False) -> None:
        super().__init__()
        self.module = module
        self.resnet = resnet

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x) + x if self.resnet else self.module(x)


class DenseBlockWithDropout(nn.Module):
    """As `DenseBlock`, passing the dropout rate to a `SequentialWithDropout`."""

    def __init__(self, module: nn.Module, resnet: bool = False) -> None:
        super().__init__()
        self.module = module
        self.resnet = resnet
        self._supports_custom_dropout = True

    def forward(self, x: Tensor, p: float) -> Tensor:
        return self.module(x, p) + x if self.resnet else self.module(x, p)


class DotInteract(nn.Module):
    """Pairwise dot products of [dense, sparse...] vectors: upper triangle incl. diagonal.

    27 vectors (1 dense + 26 sparse) give 27 * 28 / 2 = 378 products, concatenated after
    the dense vector: 128 + 378 = 506 features for DlrmSmall.
    """

    def __init__(self, num_sparse_features: int) -> None:
        super().__init__()
        n = num_sparse_features + 1
        # A plain attribute, not a buffer (upstream's choice): DDP broadcasts buffers every
        # forward, and a state_dict entry would change upstream's checkpoint keys.
        self.triu_indices = torch.triu_indices(n, n, device='cpu')

    def forward(self, dense_features: Tensor, sparse_features: Tensor) -> Tensor:
        combined = torch.cat((dense_features.unsqueeze(1), sparse_features), dim=1)
        interactions = torch.bmm(combined, torch.transpose(combined, 1, 2))
        if self.triu_indices.device != interactions.device:
            # Moved once: indexing a CUDA tensor with CPU indices copies them every call.
            self.triu_indices = self.triu_indices.to(interactions.device)
        rows, cols = self.triu_indices[0], self.triu_indices[1]
        return torch.cat((dense_features, interactions[:, rows, cols]), dim=1)


def dot_interaction_dim(embed_dim: int, num_sparse_features: int) -> int:
    """Width of DotInteract's output (upstream hard-codes 506 for 128 and 26)."""
    n = num_sparse_features + 1
    return embed_dim + n * (n + 1) // 2


class DlrmSmall(_ChunkedTable, nn.Module):
    """DLRM-small: bottom MLP, shared chunked table, dot interaction, top MLP.

    Args:
      vocab_size: table rows (4,194,304 upstream; 65,536 in criteo1tb_test).
      num_dense_features: dense inputs (13).
      num_sparse_features: categorical inputs (26).
      mlp_bottom_dims: bottom MLP widths; the last must equal `embed_dim`.
      mlp_top_dims: top MLP widths, ending in 1 logit.
      embed_dim: embedding width (128).
      use_layer_norm: LayerNorm(eps 1e-6) after every hidden ReLU and on the embeddings.
      embedding_init_multiplier: table init U[0, 1) times this; None = 1/sqrt(vocab_size).
      embedding_lookup: `(indices, chunks) -> rows`; None = `chunked_embedding`.
    """

    def __init__(
        self,
        vocab_size: int,
        num_dense_features: int = 13,
        num_sparse_features: int = 26,
        mlp_bottom_dims: Sequence[int] = (512, 256, 128),
        mlp_top_dims: Sequence[int] = (1024, 1024, 512, 256, 1),
        embed_dim: int = 128,
        use_layer_norm: bool = False,
        embedding_init_multiplier: float | None = None,
        embedding_lookup: LookupFn | None = None,
    ) -> None:
        super().__init__()
        self.vocab_size = int(vocab_size)
        self.num_dense_features = num_dense_features
        self.num_sparse_features = num_sparse_features
        self.mlp_bottom_dims = tuple(mlp_bottom_dims)
        self.mlp_top_dims = tuple(mlp_top_dims)
        self.embed_dim = embed_dim
        self.embedding_init_multiplier = embedding_init_multiplier
        self.embedding_lookup = embedding_lookup

        # Construction order = upstream's: it fixes both the parameter order and which
        # global-RNG draws each tensor gets (nn.Linear's default init draws too).
        if embedding_init_multiplier is None:
            scale = _default_scale(self.vocab_size)
        else:
            scale = embedding_init_multiplier
        self._init_embedding(self.vocab_size, embed_dim, scale)

        layers: list[nn.Module] = []
        input_dim = num_dense_features
        for dense_dim in self.mlp_bottom_dims:
            layers += [nn.Linear(input_dim, dense_dim), nn.ReLU(inplace=True)]
            if use_layer_norm:
                layers.append(nn.LayerNorm(dense_dim, eps=1e-6))
            input_dim = dense_dim
        self.bot_mlp = nn.Sequential(*layers)
        _init_bottom_mlp(self.bot_mlp)

        self.dot_interact = DotInteract(num_sparse_features=num_sparse_features)

        num_layers_top = len(self.mlp_top_dims)
        fan_in = dot_interaction_dim(self.mlp_bottom_dims[-1], num_sparse_features)
        layers = []
        for layer_idx, fan_out in enumerate(self.mlp_top_dims):
            layers.append(nn.Linear(fan_in, fan_out))
            if layer_idx < num_layers_top - 1:
                layers.append(nn.ReLU(inplace=True))
                if use_layer_norm:
                    layers.append(nn.LayerNorm(fan_out, eps=1e-6))
            if layer_idx == num_layers_top - 2:
                layers.append(CustomDropout())  # Only after the last hidden layer.
            fan_in = fan_out
        self.top_mlp = SequentialWithDropout(*layers)
        self.embed_ln = nn.LayerNorm(embed_dim, eps=1e-6) if use_layer_norm else None
        _init_top_mlp(self.top_mlp)

    def forward(self, x: Tensor, dropout_rate: float = DROPOUT_RATE) -> Tensor:
        """[B, 13 + 26] float32 -> [B, 1] logits."""
        dense_features, sparse_features = torch.split(
            x, [self.num_dense_features, self.num_sparse_features], 1
        )
        embedded_dense = self.bot_mlp(dense_features)
        embedded_sparse = self._lookup_sparse(sparse_features)
        if self.embed_ln is not None:
            embedded_sparse = self.embed_ln(embedded_sparse)
        concatenated = self.dot_interact(embedded_dense, embedded_sparse)
        return self.top_mlp(concatenated, dropout_rate)


class DLRMResNet(_ChunkedTable, nn.Module):
    """DLRM with residual MLPs and concatenation instead of the dot interaction.

    Upstream accepts but ignores `use_layer_norm` and `embedding_init_multiplier` here
    (the table scale is always 1/sqrt(vocab_size)); so does this class.

    Args:
      vocab_size: table rows.
      num_dense_features: dense inputs (13).
      num_sparse_features: categorical inputs (26).
      mlp_bottom_dims: bottom widths; blocks after the first are residual.
      mlp_top_dims: top widths; blocks other than the first and last are residual.
      embed_dim: embedding width (128).
      use_layer_norm: ignored, as upstream.
      embedding_init_multiplier: ignored, as upstream.
      embedding_lookup: `(indices, chunks) -> rows`; None = `chunked_embedding`.
    """

    def __init__(
        self,
        vocab_size: int,
        num_dense_features: int = 13,
        num_sparse_features: int = 26,
        mlp_bottom_dims: Sequence[int] = (256, 256, 256),
        mlp_top_dims: Sequence[int] = (256, 256, 256, 256, 1),
        embed_dim: int = 128,
        use_layer_norm: bool = False,
        embedding_init_multiplier: float | None = None,
        embedding_lookup: LookupFn | None = None,
    ) -> None:
        super().__init__()
        del use_layer_norm, embedding_init_multiplier
        self.vocab_size = int(vocab_size)
        self.num_dense_features = num_dense_features
        self.num_sparse_features = num_sparse_features
        self.mlp_bottom_dims = tuple(mlp_bottom_dims)
        self.mlp_top_dims = tuple(mlp_top_dims)
        self.embed_dim = embed_dim
        self.embedding_lookup = embedding_lookup

        self._init_embedding(self.vocab_size, embed_dim, _default_scale(self.vocab_size))

        blocks: list[nn.Module] = []
        input_dim = num_dense_features
        for layer_idx, dense_dim in enumerate(self.mlp_bottom_dims):
            block = nn.Sequential(nn.Linear(input_dim, dense_dim), nn.ReLU(inplace=True))
            blocks.append(DenseBlock(block, resnet=layer_idx > 0))
            input_dim = dense_dim
        self.bot_mlp = nn.Sequential(*blocks)
        _init_bottom_mlp(self.bot_mlp)

        num_layers_top = len(self.mlp_top_dims)
        fan_in = num_sparse_features * embed_dim + self.mlp_bottom_dims[-1]
        blocks = []
        for layer_idx, fan_out in enumerate(self.mlp_top_dims):
            layers: list[nn.Module] = [nn.Linear(fan_in, fan_out)]
            if layer_idx < num_layers_top - 1:
                layers.append(nn.ReLU(inplace=True))
            if layer_idx == num_layers_top - 2:
                layers.append(CustomDropout())
            resnet = layer_idx not in (0, num_layers_top - 1)
            blocks.append(DenseBlockWithDropout(SequentialWithDropout(*layers), resnet=resnet))
            fan_in = fan_out
        self.top_mlp = SequentialWithDropout(*blocks)
        _init_top_mlp(self.top_mlp)

    def forward(self, x: Tensor, dropout_rate: float = DROPOUT_RATE) -> Tensor:
        """[B, 13 + 26] float32 -> [B, 1] logits."""
        batch_size = x.shape[0]
        dense_features, sparse_features = torch.split(
            x, [self.num_dense_features, self.num_sparse_features], 1
        )
        embedded_dense = self.bot_mlp(dense_features)
        embedded_sparse = self._lookup_sparse(sparse_features).reshape(
            batch_size, self.num_sparse_features * self.embed_dim
        )
        top_mlp_input = torch.cat([embedded_dense, embedded_sparse], dim=1)
        return self.top_mlp(top_mlp_input, dropout_rate)
