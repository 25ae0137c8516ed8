"""The ogbg-molpcba graph network, as upstream AlgoPerf v0.6 builds it.

Faithful to `algoperf/workloads/ogbg/ogbg_pytorch/models.py` (a port of init2winit's
`gnn.py`): module and parameter names (so `param_shapes` and the parameter-type tree
match upstream's), registration order, shapes, the order of RNG draws at construction
(torch's default Linear init, then LeCun-normal re-initialisation of every Linear in
`self.modules()` order, so a seed gives upstream's initial weights), LayerNorm eps 1e-6,
the activations (ReLU; GELU with the tanh approximation; SiLU) and the dropout rate
given at forward time.

Differences, none of them numeric beyond summation order:
- The batch is our `GraphsTuple` (a NamedTuple of plain tensors with jraph's field
  names), so neither jraph nor torch_scatter is needed.
- Upstream's per-graph broadcasts use `repeat_interleave(g, n_node)`, whose output
  shape depends on tensor values. Here each node's and edge's graph index comes from
  `searchsorted` on the cumulative counts (static shapes), and the broadcast is a gather
  `g.index_select(0, graph_index)`: the same values, and traceable by torch.compile
  without graph breaks. Gathers use `index_select` (backward: `index_add_`) and sums
  `index_add_` (upstream: `x[i]` and torch_scatter's `scatter_add_` over an expanded
  index; all atomic-add on CUDA).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor, nn

from algoperf import init_utils
from algoperf.pytorch_utils import CustomDropout, SequentialWithDropout

DROPOUT_RATE = 0.1
NODE_FEATURES = 9  # ogbg-molpcba atom features.
EDGE_FEATURES = 3  # ogbg-molpcba bond features.


class GraphsTuple(NamedTuple):
    """A batch of graphs as flat tensors (jraph's `GraphsTuple` fields and order).

    Attributes:
      nodes: float [N, 9] node features of all graphs, graph after graph.
      edges: float [E, 3] edge features.
      receivers: int64 [E] receiving node of each edge (a global node index).
      senders: int64 [E] sending node of each edge.
      globals: unused on input (None); the model starts the globals at zero.
      n_node: int64 [G] nodes per graph (padding graphs included; they sum to N).
      n_edge: int64 [G] edges per graph (sum to E).
    """

    nodes: Tensor
    edges: Tensor
    receivers: Tensor
    senders: Tensor
    globals: Tensor | None
    n_node: Tensor
    n_edge: Tensor


def graph_index(counts: Tensor, total: int) -> Tensor:
    """[total] index of the graph each item belongs to, given per-graph `counts`.

    Equal to `repeat_interleave(arange(G), counts)` when `counts.sum() == total`; graphs
    with 0 items are skipped as there.
    """
    ends = torch.cumsum(counts, dim=0)
    positions = torch.arange(total, device=counts.device, dtype=ends.dtype)
    return torch.searchsorted(ends, positions, right=True)


def scatter_sum(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """out[i] = sum of src[j] over j with index[j] == i; out has `dim_size` rows."""
    out = src.new_zeros((dim_size, *src.shape[1:]))
    return out.index_add_(0, index, src)


def _make_mlp(in_dim: int, hidden_dims: Sequence[int], activation_fn) -> SequentialWithDropout:
    """[Linear -> LayerNorm(eps 1e-6) -> activation -> dropout] per hidden dim."""
    layers = SequentialWithDropout()
    for i, dim in enumerate(hidden_dims):
        layers.add_module(f'dense_{i}', nn.Linear(in_features=in_dim, out_features=dim))
        layers.add_module(f'norm_{i}', nn.LayerNorm(dim, eps=1e-6))
        layers.add_module(f'activation_fn_{i}', activation_fn())
        layers.add_module(f'dropout_{i}', CustomDropout())
        in_dim = dim
    return layers


_ACTIVATIONS = {
    'relu': nn.ReLU,
    'gelu': partial(nn.GELU, approximate='tanh'),
    'silu': nn.SiLU,
}


class GNN(nn.Module):
    """Graph network: embed, `num_message_passing_steps` GraphNetwork blocks, decode globals.

    Args:
      num_outputs: tasks predicted per graph (128 on molpcba); also the width of the
        zero globals the first block reads.
      activation_fn_name: 'relu', 'gelu' (tanh approximation) or 'silu'.
      latent_dim: width of the node and edge embeddings.
      hidden_dims: widths of each MLP's layers; the last is the width of updated
        nodes, edges and globals.
      num_message_passing_steps: GraphNetwork blocks (separate weights each).
    """

    def __init__(
        self,
        num_outputs: int = 128,
        activation_fn_name: str = 'relu',
        latent_dim: int = 256,
        hidden_dims: Sequence[int] = (256,),
        num_message_passing_steps: int = 5,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.hidden_dims = tuple(hidden_dims)
        self.num_message_passing_steps = num_message_passing_steps
        self.num_outputs = num_outputs
        self.node_embedder = nn.Linear(in_features=NODE_FEATURES, out_features=latent_dim)
        self.edge_embedder = nn.Linear(in_features=EDGE_FEATURES, out_features=latent_dim)
        if activation_fn_name not in _ACTIVATIONS:
            raise ValueError(f'Invalid activation function name: {activation_fn_name}')
        activation_fn = _ACTIVATIONS[activation_fn_name]

        hidden = self.hidden_dims[-1]
        blocks = []
        for step in range(num_message_passing_steps):
            # Input widths of upstream's concatenations (see GraphNetwork.forward).
            if step == 0:
                in_dim_edge_fn = latent_dim * 3 + num_outputs
                in_dim_node_fn = latent_dim + hidden * 2 + num_outputs
                last_in_dim = hidden * 2 + num_outputs
            else:
                in_dim_edge_fn = hidden * 4
                in_dim_node_fn = hidden * 4
                last_in_dim = hidden * 3
            blocks.append(
                GraphNetwork(
                    update_edge_fn=_make_mlp(in_dim_edge_fn, self.hidden_dims, activation_fn),
                    update_node_fn=_make_mlp(in_dim_node_fn, self.hidden_dims, activation_fn),
                    update_global_fn=_make_mlp(last_in_dim, self.hidden_dims, activation_fn),
                )
            )
        self.graph_network = SequentialWithDropout(*blocks)
        self.decoder = nn.Linear(in_features=hidden, out_features=num_outputs)

        for m in self.modules():
            if isinstance(m, nn.Linear):
                init_utils.pytorch_default_init(m)

    def forward(self, graph: GraphsTuple, dropout_rate: float = DROPOUT_RATE) -> Tensor:
        """[G, num_outputs] logits, one row per graph (padding graphs included)."""
        n_graph = graph.n_node.shape[0]
        globals_ = graph.nodes.new_zeros((n_graph, self.num_outputs))
        graph = graph._replace(
            nodes=self.node_embedder(graph.nodes),
            edges=self.edge_embedder(graph.edges),
            globals=globals_,
        )
        graph = self.graph_network(graph, dropout_rate)
        return self.decoder(graph.globals)


class GraphNetwork(nn.Module):
    """One message-passing block (Battaglia et al. 2018, Algorithm 1).

    As upstream, the node update aggregates the sent and the received edges separately
    (the paper uses received edges only). Edge update input: [edge, sender node,
    receiver node, graph global]; node update: [node, sum of sent edges, sum of received
    edges, global]; global update: [sum of the graph's nodes, sum of its edges, global].
    """

    def __init__(
        self, update_edge_fn: nn.Module, update_node_fn: nn.Module, update_global_fn: nn.Module
    ):
        super().__init__()
        self.update_edge_fn = update_edge_fn
        self.update_node_fn = update_node_fn
        self.update_global_fn = update_global_fn
        self._supports_custom_dropout = True  # Takes the rate from SequentialWithDropout.

    def forward(self, graph: GraphsTuple, dropout_rate: float) -> GraphsTuple:
        nodes, edges, receivers, senders, globals_, n_node, n_edge = graph
        num_nodes, num_edges, n_graph = nodes.shape[0], edges.shape[0], n_node.shape[0]
        node_graph = graph_index(n_node, num_nodes)
        edge_graph = graph_index(n_edge, num_edges)

        # index_select, not `nodes[senders]`: same values, but its backward is an index_add_,
        # cheaper on CPU than advanced indexing's accumulating put (bench_ogbg_step.py).
        edge_inputs = torch.cat(
            [
                edges,
                nodes.index_select(0, senders),
                nodes.index_select(0, receivers),
                globals_.index_select(0, edge_graph),
            ],
            dim=-1,
        )
        edges = self.update_edge_fn(edge_inputs, dropout_rate)

        sent = scatter_sum(edges, senders, num_nodes)
        received = scatter_sum(edges, receivers, num_nodes)
        node_inputs = torch.cat(
            [nodes, sent, received, globals_.index_select(0, node_graph)], dim=-1
        )
        nodes = self.update_node_fn(node_inputs, dropout_rate)

        node_sums = scatter_sum(nodes, node_graph, n_graph)
        edge_sums = scatter_sum(edges, edge_graph, n_graph)
        global_inputs = torch.cat([node_sums, edge_sums, globals_], dim=-1)
        globals_ = self.update_global_fn(global_inputs, dropout_rate)
        return GraphsTuple(nodes, edges, receivers, senders, globals_, n_node, n_edge)
