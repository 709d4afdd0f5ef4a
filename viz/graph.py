"""One iterative walk over a recorded graph: every tensor reachable from the roots, inputs first.

The walk follows `.parents` in argument order (constants included), so the order, and the node ids
numbered from it, are the same every time the same program runs: DOT output is stable. No recursion,
so a 10,000-step unrolled graph walks like a 10-step one.
"""
from tinygrad_rnn.tensor import Tensor, topological_order


class RecordedGraph:
    """The tensors of a graph in walk order, with their positions.

    nodes: list of Tensors, each after all of its parents (depth-first post-order from the roots).
    index: {Tensor: position in nodes}.
    roots: the Tensors the walk started from.
    """

    def __init__(self, nodes, index, roots):
        self.nodes, self.index, self.roots = nodes, index, roots
        self.gradients = {}  # position -> ∂L/∂tensor recovered by viz.replay (filled on demand)

    def __len__(self):
        return len(self.nodes)

    @property
    def steps(self):
        """The time steps present in the graph, sorted."""
        return sorted({n.step for n in self.nodes if n.step is not None})


def is_copy(t):
    """Is `t` a per-step copy P(t) of a shared parameter? The op says so itself (tensor.Op.is_copy)."""
    return t.op is not None and t.op.is_copy


def as_roots(roots):
    """A Tensor, a sequence of Tensors, or something with `.losses`/`.logits` (an RNNOutput) -> list."""
    if isinstance(roots, Tensor):
        return [roots]
    for field in ("losses", "logits"):
        tensors = getattr(roots, field, None)
        if tensors:
            return list(tensors)
    try:
        roots = list(roots)
    except TypeError:
        raise TypeError(f"viz: expected a Tensor (e.g. the loss L) or a list of Tensors, got "
                        f"{type(roots).__name__}") from None
    if not roots or not all(isinstance(r, Tensor) for r in roots):
        raise TypeError("viz: expected a Tensor (e.g. the loss L) or a non-empty list of Tensors")
    return roots


def walk(roots):
    """RecordedGraph of everything reachable from `roots` (a Tensor or a list of Tensors)."""
    roots = as_roots(roots)
    nodes = topological_order(roots, grad_only=False)
    return RecordedGraph(nodes, {node: i for i, node in enumerate(nodes)}, roots)
