"""ogbg-molpcba GNN in PyTorch: the base workload and upstream's three variants.

Upstream: `algoperf/workloads/ogbg/workload.py` (base class), `ogbg_pytorch/workload.py`
and `ogbg/metrics.py` (snapshot 2c90454). Kept as upstream: the model (`models.py`),
the masked sigmoid BCE with label smoothing (`metrics.py`; per-example losses are
[B, 128] and `n_valid_examples` counts valid (graph, task) labels), the eval metrics
`{'accuracy', 'loss', 'mean_average_precision'}`, `is_output_params` and the batch
budgets. Constants (targets, budgets, sizes, model switches) come from `spec.py`.

Batches (per device, n = global_batch_size // world_size, as jraph's dynamic batching
with upstream's budgets pads them): `inputs` a `models.GraphsTuple` with exactly
26·n + 1 nodes (float32 [., 9]), 56·n edges (float32 [., 3]; int64 senders and
receivers) and n + 1 graphs (int64 `n_node`, `n_edge`): the real graphs, then one
padding graph holding every padding node and edge (which all point at its first node),
then empty graphs; `targets` float32 [n + 1, 128] and `weights` bool [n + 1, 128]
(False for NaN labels and padding graphs). Fixed shapes: a compiled model sees one.

Real data: `input_pipeline.py` reads the `.npy` columns `algoperf data ogbg` converts
from the OGB release (see `convert.py`); `algoperf profile` can run on
`_build_synthetic_input_queue` instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
import torch.distributed as dist

from algoperf import spec
from algoperf.prefetch import Prefetcher
from algoperf.workload_base import EvalPass, SpecWorkload
from workloads.ogbg import input_pipeline, metrics, models
from workloads.ogbg.spec import OGBG, OGBG_GELU, OGBG_MODEL_SIZE, OGBG_SILU

NUM_OUTPUTS = 128  # molpcba tasks.
_SYNTHETIC_POOL = 4  # Distinct synthetic batches, cycled.
batch_budgets = input_pipeline.batch_budgets


class OgbgWorkload(SpecWorkload):
    """GNN on ogbg-molpcba (upstream `OgbgWorkload`)."""

    workload_spec = OGBG
    hidden_dims: tuple[int, ...] = (256,)  # A tuple upstream, so not in `spec.extra`.
    # An eval forward of upstream's 32,768-graph batch peaked at 18.7 GB resident on CPU
    # (issue #16): ~0.57 MB per average graph (edge MLP inputs, 56 edges x 4 x 256 floats).
    eval_bytes_per_example = 600_000

    # ---- model ---------------------------------------------------------------------------------
    def _build_model(self) -> torch.nn.Module:
        """The model on the current default device (use `torch.device('meta')` to count)."""
        extra = self.workload_spec.extra
        return models.GNN(
            num_outputs=NUM_OUTPUTS,
            activation_fn_name=extra['activation_fn_name'],
            latent_dim=extra['latent_dim'],
            hidden_dims=self.hidden_dims,
            num_message_passing_steps=extra['num_message_passing_steps'],
        )

    def is_output_params(self, param_key: spec.ParameterKey) -> bool:
        return param_key in ('decoder.weight', 'decoder.bias')

    def model_fn(
        self,
        params: spec.ParameterContainer,
        augmented_and_preprocessed_input_batch: dict[str, spec.Tensor],
        model_state: spec.ModelAuxiliaryState,
        mode: spec.ForwardPassMode,
        rng: spec.RandomState,
        update_batch_norm: bool,
        dropout_rate: float = models.DROPOUT_RATE,
    ) -> tuple[spec.Tensor, spec.ModelAuxiliaryState]:
        """Graph batch -> ([n_graph, 128] logits, None); no_grad in EVAL."""
        del rng, update_batch_norm  # No batch norm in the GNN.
        if model_state is not None:
            raise ValueError(f'Expected model_state to be None, received {model_state}.')
        model = params
        with self._forward_context(model, mode):
            logits = model(
                augmented_and_preprocessed_input_batch['inputs'], dropout_rate=dropout_rate
            )
        return logits, None

    # ---- loss and eval -------------------------------------------------------------------------
    def loss_fn(
        self,
        label_batch: spec.Tensor,
        logits_batch: spec.Tensor,
        mask_batch: spec.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, spec.Tensor]:
        """Masked sigmoid BCE over (graph, task) labels (no regularisation, not synced).

        Args:
          label_batch: [B, 128] targets in {0, 1}.
          logits_batch: [B, 128].
          mask_batch: optional [B, 128] bool/float weights; None means all valid
            (upstream would fail on None; its batches always carry weights).
          label_smoothing: towards 1/128, upstream's formula.

        Returns:
          {'summed': scalar, 'n_valid_examples': number of valid labels (a tensor on the
          logits' device), 'per_example': [B, 128] losses, 0 where masked}.
        """
        if mask_batch is None:
            mask_batch = torch.ones_like(logits_batch, dtype=torch.bool)
        per_example = metrics.sigmoid_cross_entropy_with_mask(
            label_batch, logits_batch, mask_batch, label_smoothing
        )
        return {
            'summed': per_example.sum(),
            'n_valid_examples': torch.as_tensor(mask_batch.sum(), device=logits_batch.device),
            'per_example': per_example,
        }

    def _eval_model_on_split(
        self,
        split: str,
        num_examples: int,
        global_batch_size: int,
        params: spec.ParameterContainer,
        model_state: spec.ModelAuxiliaryState,
        rng: spec.RandomState,
        data_dir: str,
        global_step: int = 0,
    ) -> dict[str, float]:
        """{'accuracy', 'loss', 'mean_average_precision'} over one pass of the split.

        The real reader's pass holds the first min(num_examples, graphs present) graphs
        (eval_train: of a fixed shuffle) once; synthetic queues give upstream's
        ceil(num_examples / batch) global batches.

        As upstream, "examples" are average-sized graphs (batches are packed), accuracy
        and loss are means over valid labels of all ranks, and mAP is computed on the
        host from every rank's logits, labels and masks.
        """
        del global_step
        if split not in self._eval_iters:
            self._eval_iters[split] = self._build_input_queue(
                rng, split, data_dir, global_batch_size, num_examples=num_examples
            )
        queue = self._eval_iters[split]
        # The real reader's queue knows its pass (the graphs present, read once); others
        # (synthetic batches) get upstream's count of global batches.
        self._eval_count(split, num_examples, getattr(queue, 'num_examples', None))
        device = self.runtime.device
        totals = {
            k: torch.zeros((), dtype=torch.float64, device=device)
            for k in ('accuracy', 'loss', 'count')
        }
        collected = {'labels': [], 'logits': [], 'mask': []}
        for batch in self._one_pass(queue, num_examples, global_batch_size):
            logits, _ = self.model_fn(
                params, batch, model_state, spec.ForwardPassMode.EVAL, rng, False
            )
            sums = metrics.batch_sums(batch['targets'], logits, batch['weights'])
            totals = {k: v + sums[k] for k, v in totals.items()}
            collected['labels'].append(batch['targets'])
            collected['logits'].append(logits)
            # uint8: all_gather has no bool on every backend.
            collected['mask'].append(batch['weights'].to(torch.uint8))
        arrays = {k: torch.cat(v) for k, v in collected.items()}
        if self.runtime.distributed:
            for total in totals.values():
                dist.all_reduce(total)
            for k, tensor in arrays.items():
                # Every rank's batches have the same padded shape (fixed budgets).
                gathered = [torch.empty_like(tensor) for _ in range(self.runtime.world_size)]
                dist.all_gather(gathered, tensor)
                arrays[k] = torch.cat(gathered)
        # The eval's host syncs.
        count = float(totals['count'].item())
        host = {k: v.cpu().numpy() for k, v in arrays.items()}
        return {
            'accuracy': float(totals['accuracy'].item()) / count,
            'loss': float(totals['loss'].item()) / count,
            'mean_average_precision': metrics.mean_average_precision(
                host['labels'], host['logits'], host['mask']
            ),
        }

    # ---- data ----------------------------------------------------------------------------------
    def validate_data_dir(self, data_dir: str) -> None:
        """Fails before any log is written when the converted splits are missing."""
        for split in input_pipeline.SPLITS:
            input_pipeline.load_split(data_dir, split)

    def _build_input_queue(
        self,
        data_rng: spec.RandomState,
        split: str,
        data_dir: str,
        global_batch_size: int,
        cache: bool | None = None,
        repeat_final_dataset: bool | None = None,
        num_batches: int | None = None,
        num_examples: int | None = None,
    ) -> Iterator[dict[str, spec.Tensor]]:
        """This rank's device batches: endless for train, one cycled pass for eval splits.

        Args:
          data_rng: its first word seeds the shuffles (train; eval_train's subset).
          split: 'train', 'eval_train', 'validation' or 'test'.
          data_dir: holds `ogbg_molpcba/` as `algoperf data ogbg` writes it.
          global_batch_size: average-sized graphs; each rank packs global // world_size.
          cache, repeat_final_dataset, num_batches: upstream's arguments, unused (eval
            batches are always kept on the device and cycled, as upstream's eval iterators).
          num_examples: graphs an eval pass reads (default: the whole split).

        Eval batches are packed for at most `eval_examples_per_forward()` average graphs
        (memory-bounded eval: upstream's 32,768-graph batch is an 18.7 GB CPU forward):
        the same graphs in smaller packed batches, so the eval's sums are the same.
        """
        del cache, repeat_final_dataset, num_batches
        n = global_batch_size // self.runtime.world_size
        rank, world = self.runtime.rank, self.runtime.world_size
        graphs = input_pipeline.load_split(data_dir, split)
        seed = int(data_rng[0])
        if split == 'train':
            # Gathers in numpy release the GIL: the next batch is packed during the step.
            batches = input_pipeline.train_batches(graphs, seed, n, rank, world)
            return self._on_device(Prefetcher(batches))
        count = len(graphs) if num_examples is None else min(num_examples, len(graphs))
        ids = input_pipeline.eval_ids(graphs, split, seed, count)
        packed = min(n, self.eval_examples_per_forward() or n)
        batches = input_pipeline.eval_batches(graphs, ids, packed, rank, world)
        return EvalPass(list(self._on_device(batches)), num_examples=len(ids))

    def _on_device(self, batches: Iterator[dict]) -> Iterator[dict[str, spec.Tensor]]:
        for batch in batches:
            yield {
                'inputs': models.GraphsTuple(*(self._to_device(t) for t in batch['inputs'])),
                'targets': self._to_device(batch['targets']),
                'weights': self._to_device(batch['weights']),
            }

    def _build_synthetic_input_queue(
        self, data_rng: spec.RandomState, split: str, global_batch_size: int
    ) -> Iterator[dict[str, spec.Tensor]]:
        """Endless device batches with the real layout and budgets: a few made once, then cycled.

        Graphs have 13-39 nodes (mean 26) and 2·(nodes + 2) directed edges (mean 56,
        each bond in both directions, as upstream's reader makes them) between random
        nodes of the same graph; they are packed greedily under the node/edge/graph
        budgets as `jraph.dynamically_batch` does, then padded. Node and edge features
        are small non-negative integers stored as float32 (molpcba's are categorical);
        half the labels are valid, a tenth of those positive.

        Args:
          data_rng: RandomState; its first word (plus the rank) seeds the generator.
          split: any split (all batches have weights, as upstream's). Eval splits pack
            each global batch as ceil(n / cap) batches of at most
            `eval_examples_per_forward()` graphs (memory-bounded eval).
          global_batch_size: average-sized graphs; divided by the world size.
        """
        n = global_batch_size // self.runtime.world_size
        per_global = 1
        if split != 'train':
            packed = min(n, self.eval_examples_per_forward() or n)
            per_global, n = -(-n // packed), packed
        gen = torch.Generator().manual_seed(int(data_rng[0]) + self.runtime.rank)
        device = self.runtime.device
        pool = [
            {
                k: v.to(device) if torch.is_tensor(v) else v
                for k, v in synthetic_batch(n, gen).items()
            }
            for _ in range(_SYNTHETIC_POOL)
        ]
        for batch in pool:
            batch['inputs'] = models.GraphsTuple(
                *(None if t is None else t.to(device) for t in batch['inputs'])
            )
        if per_global == 1:
            return itertools.cycle(pool)
        return EvalPass(source=itertools.cycle(pool), batches_per_global_batch=per_global)


def synthetic_batch(per_device_batch_size: int, gen: torch.Generator) -> dict:
    """One padded CPU batch of random molecule-sized graphs (see the queue's docstring)."""
    max_nodes, max_edges, max_graphs = batch_budgets(per_device_batch_size)
    n_node = torch.randint(13, 40, (max_graphs - 1,), generator=gen)
    n_edge = 2 * (n_node + 2)
    # Greedy packing: graphs while the running sums fit (one node kept for padding).
    fits = (torch.cumsum(n_node, 0) <= max_nodes - 1) & (torch.cumsum(n_edge, 0) <= max_edges)
    k = int(fits.long().cumprod(0).sum())
    n_node, n_edge = n_node[:k], n_edge[:k]
    real_nodes, real_edges = int(n_node.sum()), int(n_edge.sum())

    # Directed edges within each graph: the first half of a graph's edges, then reversed.
    half = n_edge // 2
    half_graph = torch.repeat_interleave(torch.arange(k), half)
    offsets = torch.cumsum(n_node, 0) - n_node
    size = n_node[half_graph]
    a = offsets[half_graph] + (torch.rand(len(half_graph), generator=gen) * size).long()
    b = offsets[half_graph] + (torch.rand(len(half_graph), generator=gen) * size).long()
    edge_starts = torch.cumsum(n_edge, 0) - n_edge
    senders = torch.empty(real_edges, dtype=torch.long)
    receivers = torch.empty(real_edges, dtype=torch.long)
    within = torch.arange(len(half_graph)) - (torch.cumsum(half, 0) - half)[half_graph]
    first = edge_starts[half_graph] + within
    senders[first], receivers[first] = a, b
    senders[first + half[half_graph]], receivers[first + half[half_graph]] = b, a

    # jraph.pad_with_graphs: one graph with all padding nodes/edges, then empty graphs.
    pad_nodes, pad_edges, pad_graphs = (
        max_nodes - real_nodes,
        max_edges - real_edges,
        max_graphs - k,
    )
    zeros = torch.zeros(pad_graphs - 1, dtype=torch.long)
    n_node = torch.cat([n_node, torch.tensor([pad_nodes]), zeros])
    n_edge = torch.cat([n_edge, torch.tensor([pad_edges]), zeros])
    senders = torch.cat([senders, torch.full((pad_edges,), real_nodes)])
    receivers = torch.cat([receivers, torch.full((pad_edges,), real_nodes)])
    nodes = torch.cat(
        [
            torch.randint(0, 8, (real_nodes, models.NODE_FEATURES), generator=gen).float(),
            torch.zeros(pad_nodes, models.NODE_FEATURES),
        ]
    )
    edges = torch.cat(
        [
            torch.randint(0, 4, (real_edges, models.EDGE_FEATURES), generator=gen).float(),
            torch.zeros(pad_edges, models.EDGE_FEATURES),
        ]
    )

    labels = (torch.rand(max_graphs, NUM_OUTPUTS, generator=gen) < 0.1).float()
    weights = torch.rand(max_graphs, NUM_OUTPUTS, generator=gen) < 0.5
    weights[k:] = False  # Padding graphs.
    labels = torch.where(weights, labels, 0.0)  # NaN labels and padding read 0, as upstream.
    graph = models.GraphsTuple(nodes, edges, receivers, senders, None, n_node, n_edge)
    return {'inputs': graph, 'targets': labels, 'weights': weights}


class OgbgGeluWorkload(OgbgWorkload):
    """GELU (tanh approximation) instead of ReLU."""

    workload_spec = OGBG_GELU


class OgbgSiluWorkload(OgbgWorkload):
    """SiLU instead of ReLU."""

    workload_spec = OGBG_SILU


class OgbgModelSizeWorkload(OgbgWorkload):
    """Latent 128, hidden (256, 256), 3 message-passing steps."""

    workload_spec = OGBG_MODEL_SIZE
    hidden_dims = (256, 256)
