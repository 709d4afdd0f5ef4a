"""The view model: what a drawing shows, as plain data (nodes, steps, copies, edges), before any graphviz.

Three views of one recorded graph (see `build_view`):

- "unrolled": the named tensors of each time step (x(t), a(t), s(t), y(t), L(t)) and that step's
  parameter copies W(t); unnamed intermediate ops are folded into the edges between named tensors.
  Each copy gets a Σ edge into its shared parameter W: ∂L/∂W = Σ_t ∂L/∂W(t).
- "rolled": the same graph with the steps laid on top of each other: x → s → y with the recurrent
  self-loop W on s, found from the edges that cross from step t−1 into step t.
- "ops": every recorded op with its output shape, grouped by step (like torchviz's make_dot).

Long sequences keep their first and last steps and fold the middle into one "… k steps …" node.
"""
import re
from dataclasses import dataclass, field

import numpy as np

from tinygrad_rnn.tensor import Tensor

from .graph import is_copy, walk
from .names import display_name, shortest_unique_suffixes
from .replay import recorded_gradients

VIEWS = ("unrolled", "rolled", "ops")
DEFAULT_MAX_STEPS = 12


@dataclass
class Node:
    """One box or ellipse of a drawing.

    kind: "param" (a shared parameter or other leaf that requires grad), "copy" (a per-step copy P(t)),
    "input" (a constant such as x(t) or s(0)), "state" (a value carried to the next step, s(t)),
    "value" (another named result: a(t), y(t)), "loss" (a scalar result feeding an output: L(t), L),
    "op" (an unnamed op result), "fold" (several folded steps).
    """
    id: str
    label: str
    kind: str
    step: int = None
    shape: tuple = ()
    grad_norm: float = None
    note: str = ""  # a second, smaller line: op and shape, folded range, loose parameters
    op: str = ""  # the recorded op that made it ("" for a leaf or a fold)


@dataclass
class Edge:
    """tail → head. kind: "data", "weight" (a parameter or copy into its op), "state" (a value carried
    from an earlier step into step t), "sum" (a copy into its shared parameter: the Σ of BPTT)."""
    tail: str
    head: str
    kind: str
    label: str = ""
    grad_norm: float = None


@dataclass
class View:
    """A drawing as plain data. `steps` maps each drawn step t to its node ids; `copies` maps each shared
    parameter's id to its drawn copies in step order; `outside` lists nodes in no step (shared parameters,
    s(0), L); `folded` holds (fold node id, first folded step, last folded step, number of steps)."""
    kind: str
    nodes: dict
    edges: list
    steps: dict = field(default_factory=dict)
    copies: dict = field(default_factory=dict)
    outside: list = field(default_factory=list)
    folded: list = field(default_factory=list)
    show_grads: bool = False
    title: str = ""
    copy_grads: dict = field(default_factory=dict)  # parameter id -> [(t, ∂L/∂P(t) or None)] by step, folded too


@dataclass
class Details:
    """What else a stepped drawing writes on its nodes (see viz.draw): sigma (None: Σ edges of every
    shared parameter, else the names that get them), show_values, and the tokens of a char example
    (inputs under x(t), targets under L(t))."""
    sigma: tuple = None
    show_values: bool = False
    inputs: list = None
    targets: list = None


def build_view(roots, view="unrolled", max_steps=DEFAULT_MAX_STEPS, show_grads=None, names=None,
               model=None, details=None):
    """The View of the graph recorded behind `roots` (a Tensor such as the loss L, or a list of Tensors).

    Parameters
    ----------
    view : "unrolled", "rolled" or "ops".
    max_steps : draw at most this many steps (first and last kept, the middle folded); None draws all.
    show_grads : colour by gradient norm; None (default) means "if any drawn tensor has a gradient".
    names : optional {name: Tensor} (e.g. `locals()`) labelling tensors that have no `.name`;
        a Tensor's own `.name` wins.
    model : optional Module (anything with named_parameters()): shared parameters whose names repeat are
        labelled by their module path (`encoder.cell.W(3)`, `cell.W(3)`); without it, numbered (`W#1`).
    """
    if view not in VIEWS:
        raise ValueError(f"viz: view must be one of {VIEWS}, got {view!r}")
    if max_steps is not None and (not isinstance(max_steps, (int, np.integer)) or max_steps < 2):
        raise ValueError(f"viz: max_steps must be an integer >= 2 (the first and last steps are always "
                         f"drawn) or None, got {max_steps!r}")
    graph = walk(roots)
    if show_grads is not False and view != "rolled":  # after backward: s(t), a(t), … without retain_grad
        graph.gradients = recorded_gradients(graph)
    labels = _labels(graph, names, model)
    if view == "unrolled":
        labels.update(_gate_blocks(graph, labels))
    kept = _kept(graph, labels, view)
    links = _links(graph, kept)
    if view == "rolled":
        result = _rolled(graph, labels, links)
    else:
        result = _stepped(graph, labels, kept, links, view, max_steps, details or Details())
    if show_grads is None:
        show_grads = any(n.grad_norm is not None for n in result.nodes.values())
    if not show_grads or view == "rolled":  # the rolled view lays all steps on one node: nothing to colour
        for item in list(result.nodes.values()) + result.edges:
            item.grad_norm = None
    result.show_grads = bool(show_grads)
    if model is not None:  # which network this is: "RNN(4, 3, 4, cell='lstm'): unrolled graph, T = 4 steps"
        result.title = f"{model_name(model)}: {result.title}"
    return result


def model_name(model):
    """A model's one-line repr (nn.RNN's names its cell), else its class name (a Seq2Seq's repr is a tree)."""
    text = repr(model)
    return display_name(text if "\n" not in text and len(text) <= 80 else type(model).__name__, limit=80)


# --- shared pieces -------------------------------------------------------------------------------

def _labels(graph, names, model=None):
    """Position -> label for every named tensor: its .name, else a name from `names`, as printable text."""
    given = {}
    for name, value in (names or {}).items():  # names=locals() holds all sorts of values: only Tensors count
        if isinstance(value, Tensor) and value in graph.index and not str(name).startswith("_"):
            given.setdefault(graph.index[value], display_name(name))
    labels = {}
    for i, t in enumerate(graph.nodes):
        label = display_name(t.name) or given.get(i)
        if label:
            labels[i] = label
    _disambiguate(graph, labels, model)
    return labels


def _disambiguate(graph, labels, model):
    """Shared parameters whose bare names repeat (Seq2Seq: the encoder's W and the decoder's W, three
    `weight`s) get their module path, as short as tells them apart (`encoder.cell.W`, `cell.W`), from
    model.named_parameters(); without a model, a number (`weight#1`, `weight#2`). Their copies follow:
    `encoder.cell.W(3)`."""
    paths = {id(p): name for name, p in model.named_parameters()} if model is not None else {}
    groups = {}
    for i, t in enumerate(graph.nodes):
        if not t.parents and t.requires_grad and i in labels:
            groups.setdefault(labels[i], []).append(i)
    renamed = {}
    for bare, members in groups.items():
        if len(members) < 2:
            continue
        found = shortest_unique_suffixes([paths.get(id(graph.nodes[i])) for i in members])
        for k, (i, path) in enumerate(zip(members, found), start=1):
            renamed[i] = (bare, display_name(path) if path else f"{bare}#{k}")
    for i, t in enumerate(graph.nodes):
        if is_copy(t) and graph.index[t.parents[0]] in renamed:
            bare, new = renamed[graph.index[t.parents[0]]]
            labels[i] = f"{new}({t.step})" if labels.get(i) in (f"{bare}({t.step})", None) else labels[i]
    for i, (_, new) in renamed.items():
        labels[i] = new


def _gate_blocks(graph, labels):
    """Position -> "gates(t)" for each unnamed tensor cut into pieces (the gate pre-activations of a GRU or
    LSTM step, chunked into i, f, g, o). Drawn as one node, every input of the step meets the gates once
    there, instead of running one edge past the folded gate ops into each of C(t) and s(t). A step with
    two such tensors (a GRU keeps x W_ih + b_ih apart from h W_hh + b_hh, for n = tanh(gi_n + r ⊙ gh_n))
    names them by what they read: "x-gates(t)" from the step's input alone, "h-gates(t)" from the
    carried state."""
    pieces = {}
    for t in graph.nodes:
        if t.op is not None and t.op.is_view and t.op.is_batched and len(t.parents) == 1:
            pieces.setdefault(graph.index[t.parents[0]], []).append(t)
    blocks = [i for i, cut in pieces.items() if len(cut) > 1 and i not in labels and graph.nodes[i].parents]
    by_step = {}
    for i in blocks:
        by_step.setdefault(graph.nodes[i].step, []).append(i)
    names = {}
    for step, ids in by_step.items():
        suffix = f"({step})" if step is not None else ""
        if len(ids) == 1:
            names[ids[0]] = f"gates{suffix}"
            continue
        sides = {i: "h" if _reads_carried(graph, i, labels) else "x" for i in ids}
        distinct = len(set(sides.values())) == len(ids)
        for k, i in enumerate(ids, start=1):
            names[i] = f"{sides[i]}-gates{suffix}" if distinct else f"gates#{k}{suffix}"
    return names


def _reads_carried(graph, i, labels):
    """Does position i depend, through unnamed ops of its own step, on a value carried from outside the
    step (the state s(t−1), or s(0))? Copies and shared parameters do not count."""
    step = graph.nodes[i].step
    stack, seen = [graph.nodes[i]], set()
    while stack:
        for p in stack.pop().parents:
            if id(p) in seen or is_copy(p) or (not p.parents and p.requires_grad):
                continue
            seen.add(id(p))
            if p.step != step:
                return True
            if graph.index[p] not in labels:  # x(t) and the step's named values end the walk
                stack.append(p)
    return False


def _param_name(p):
    return display_name(p.name) or "param"


def _kind(t, labelled):
    if is_copy(t):
        return "copy"
    if not t.parents:
        return "param" if t.requires_grad else "input"
    return "value" if labelled else "op"


def _kept(graph, labels, view):
    """Positions drawn as nodes. The unrolled view keeps named tensors, leaves, copies and the roots; the
    unnamed ops between them become edges. A graph with no named results keeps everything."""
    if view == "ops":
        return set(range(len(graph)))
    roots = {graph.index[r] for r in graph.roots}
    named_results = [i for i in labels if graph.nodes[i].parents and not is_copy(graph.nodes[i])
                     and i not in roots]
    if not named_results:
        return set(range(len(graph)))
    return {i for i, t in enumerate(graph.nodes)
            if i in labels or i in roots or is_copy(t) or (not t.parents and t.requires_grad)}


def _links(graph, kept):
    """[(tail, head, via)] between kept positions, following unnamed ops through. `via` holds the copies
    that enter the first op on the way together with the tail (U for x → a through x @ U(t)); a copy's own
    parent link (W → W(t)) is left out: drawings show it as the Σ edge W(t) → W."""
    index = graph.index
    reaching = {}  # unkept position -> [(kept ancestor, via)]
    links = []
    for i, t in enumerate(graph.nodes):
        if is_copy(t):
            continue
        incoming = {}
        copies = [q for q in t.parents if is_copy(q)]  # once per node: `stack` has T parents
        for n, p in enumerate(t.parents):
            j = index[p]
            if j in kept:
                incoming.setdefault(j, set()).update(index[q] for q in _partners(t, n, copies) if q is not p)
            else:
                for k, via in reaching.get(j, ()):
                    incoming.setdefault(k, set()).update(via)
        pairs = [(k, tuple(sorted(via))) for k, via in incoming.items()]
        if i in kept:
            links.extend((k, i, via) for k, via in pairs)
        else:
            reaching[i] = pairs
    return links


def _grad_norm(t, graph=None):
    """‖∂L/∂t‖: a leaf's or copy's own gradient, else the one viz.replay recovered (None: not recorded)."""
    g = t.grad if t.requires_grad and not t.parents or is_copy(t) else None
    if g is None and graph is not None and graph.gradients:
        g = graph.gradients.get(graph.index[t])
    return None if g is None else float(np.linalg.norm(g))


def _base(node):
    """s(3) at step 3 -> s; a label without the step suffix stays as it is."""
    return re.sub(rf"\({node.step}\)$", "", node.label) if node.step is not None else node.label


def _shape(shape):
    return "scalar" if shape == () else "×".join(str(n) for n in shape)


# --- unrolled and ops views ----------------------------------------------------------------------

def _stepped(graph, labels, kept, links, view, max_steps, details):
    """The unrolled and ops views: nodes grouped by step, the middle steps folded into one node."""
    tensors = graph.nodes
    steps = graph.steps
    folded_steps = []
    if max_steps is not None and len(steps) > max_steps:
        first, last = max_steps - max_steps // 2, max_steps // 2
        folded_steps = steps[first:len(steps) - last]
    folded, fold_id = set(folded_steps), "fold0"

    def node_id(i):
        return fold_id if tensors[i].step in folded else f"n{i}"

    nodes, copies_of = {}, {}  # copies_of: shared parameter position -> its copies' positions, folded too
    for i in sorted(kept):
        t = tensors[i]
        if is_copy(t):
            copies_of.setdefault(graph.index[t.parents[0]], []).append(i)
        if t.step in folded:
            continue
        label = labels.get(i)
        kind = _kind(t, label is not None)
        if label is None:
            label = t.op if t.parents else ("param" if t.requires_grad else "const")
        note = ""
        if view == "ops":
            note = f"{t.op}  {_shape(t.shape)}" if t.parents and label != t.op else _shape(t.shape)
        elif kind == "param":
            note = _shape(t.shape)
        note = "\n".join(x for x in (note, _token_note(label, t.step, details),
                                      _value_note(t) if details.show_values and t.parents and not is_copy(t)
                                      else "") if x)
        nodes[f"n{i}"] = Node(f"n{i}", label, kind, t.step, t.shape, _grad_norm(t, graph), note, str(t.op or ""))

    edges, seen = [], set()

    def add(edge):
        key = (edge.tail, edge.head, edge.kind)
        if edge.tail != edge.head and key not in seen:
            seen.add(key)
            edges.append(edge)

    for k, i, _ in links:
        tail, head = tensors[k], tensors[i]
        if is_copy(tail) or not tail.parents and tail.requires_grad:
            kind = "weight"
        elif head.step is not None and (tail.step is None or tail.step < head.step):
            kind = "state"  # a value carried into step t from before it: s(t−1) → a(t)
        else:
            kind = "data"
        add(Edge(node_id(k), node_id(i), kind))
    if details.sigma is not None:  # Σ edges only into the parameters named (sigma=("W",))
        copies_of = {p: cs for p, cs in copies_of.items() if labels.get(p) in set(details.sigma)}
    for p, copies in copies_of.items():
        for c in copies:
            if tensors[c].step not in folded:
                add(Edge(f"n{c}", f"n{p}", "sum", "Σ"))
    if folded_steps:
        nodes[fold_id] = Node(fold_id, f"… {len(folded_steps)} steps …", "fold")
        for p, copies in copies_of.items():
            hidden = [tensors[c] for c in copies if tensors[c].step in folded]
            if hidden:  # one edge for the folded copies, carrying the sum of their gradients
                grads = [c.grad for c in hidden if c.grad is not None]
                norm = float(np.linalg.norm(np.sum(grads, axis=0))) if grads else None
                add(Edge(fold_id, f"n{p}", "sum", f"Σ ×{len(hidden)}", norm))
    for edge in edges:  # an edge carries the gradient of its tail (what flows back along it)
        if edge.grad_norm is None:
            edge.grad_norm = nodes[edge.tail].grad_norm
    _name_kinds(nodes, edges, {f"n{graph.index[r]}" for r in graph.roots})

    by_step = {}
    for node in nodes.values():
        by_step.setdefault(node.step, []).append(node.id)
    copies = {f"n{p}": [f"n{c}" for c in sorted(cs, key=lambda c: tensors[c].step)
                        if tensors[c].step not in folded] for p, cs in copies_of.items()}
    ops = sum(1 for i in kept if tensors[i].parents)
    title = f"{view} graph, T = {len(steps)} step{'s' * (len(steps) != 1)}" if steps else \
        f"expression graph: {ops} op{'s' * (ops != 1)}, no time steps"
    if folded_steps:
        title += f" (steps {folded_steps[0]}–{folded_steps[-1]} folded)"
    return View(view, nodes, edges, {t: by_step.get(t, []) for t in steps if t not in folded}, copies,
                [n for n in by_step.get(None, []) if n != fold_id],
                [(fold_id, folded_steps[0], folded_steps[-1], len(folded_steps))] if folded_steps else [],
                title=title, copy_grads={f"n{p}": sorted(((tensors[c].step, tensors[c].grad) for c in cs),
                                                         key=lambda sg: sg[0]) for p, cs in copies_of.items()})


def _token_note(label, step, details):
    """'h' under x(1) and "target 'e'" under L(1) of a char example."""
    if step is None:
        return ""
    for tokens, base, text in ((details.inputs, "x", "'{}'"), (details.targets, "L", "target '{}'")):
        if tokens is not None and label == f"{base}({step})" and 1 <= step <= len(tokens):
            return text.format(display_name(tokens[step - 1], limit=12))
    return ""


def _value_note(t):
    """A tensor's value in one short line: 0.731 for a scalar, [0.1 -0.2 0.3] for a small array."""
    value = np.asarray(t.data)
    if value.ndim == 0:
        return f"= {float(value):.4g}"
    text = np.array2string(value.reshape(-1), precision=3, threshold=6, edgeitems=2, max_line_width=10_000)
    return display_name(text if value.ndim == 1 else f"{text} ({_shape(value.shape)})", limit=40)


def _name_kinds(nodes, edges, roots):
    """Tell states and losses from other values by where their edges go."""
    for edge in edges:  # values carried into a later step are the states s(t)
        if edge.kind == "state" and nodes[edge.tail].kind in ("value", "op"):
            nodes[edge.tail].kind = "state"
    states = {_base(n) for n in nodes.values() if n.kind == "state"}
    for n in nodes.values():  # the last s(T) carries nothing on, but it is a state like the others
        if n.kind in ("value", "op") and n.step is not None and _base(n) in states:
            n.kind = "state"
    for edge in edges:  # scalars of a step that leave the steps (L(t) into L) are the per-step losses
        tail, head = nodes[edge.tail], nodes[edge.head]
        if tail.step is not None and head.step is None and tail.shape == () and tail.kind in ("value", "op"):
            tail.kind = "loss"
    for r in roots:
        if r in nodes and nodes[r].shape == () and nodes[r].kind in ("value", "op"):
            nodes[r].kind = "loss"


# --- rolled view ---------------------------------------------------------------------------------

def _rolled(graph, labels, links):
    """Lay the steps on top of each other: one node per role (x, s, y, L(t)), edges labelled by the copies
    they go through, recurrent edges from step t−1 to t kept, then the path from a recurrent edge's head
    to its tail (a(t) → s(t)) merged into the state, so the recurrence is a self-loop W on s."""
    tensors = graph.nodes
    role, role_label = {}, {}
    for i, t in enumerate(tensors):  # walk order: parents first, so structural keys of unnamed ops resolve
        if is_copy(t):
            continue
        label = labels.get(i)
        if t.step is None:
            role[i] = ("outside", i)
            role_label[role[i]] = label or (t.op or "const")
            continue
        base = re.sub(rf"\({t.step}\)$", "", label) if label else None
        if base:
            role[i] = ("named", base)
            role_label[role[i]] = f"{base}(t)" if base != label else label
        else:  # unnamed: the op and its inputs' roles, anything from an earlier step being "carried"
            role[i] = ("op", t.op, tuple(_input_key(p, t.step, role, graph.index) for p in t.parents))
            role_label[role[i]] = t.op or "const"

    def param_of(i):
        return tensors[i].parents[0]

    edges, loose = {}, {}
    for k, i, via in links:
        head = role[i]
        if is_copy(tensors[k]):
            loose.setdefault(head, []).append(param_of(k))
            continue
        tail = role.get(k)
        if tail is None:
            continue
        t_k, t_i = tensors[k].step, tensors[i].step
        recurrent = t_i is not None and (t_k is None or t_k < t_i)  # s(t−1) → a(t), and s(0) → a(1)
        params = edges.setdefault((tail, head, recurrent), [])
        for c in via:
            _append_new(params, param_of(c))

    # merge the roles between each recurrent edge's head and its tail into the tail (the state)
    within = {}
    for (tail, head, recurrent) in edges:
        if not recurrent and tail != head:
            within.setdefault(tail, []).append(head)
    merged = {}
    carried = {tail for (tail, _, recurrent) in edges if recurrent}  # every state: h(t), and an LSTM's C(t)
    for (state, head, recurrent) in list(edges):
        if not recurrent or state == head:
            continue
        path = _between(head, state, within)
        for r in path:
            if r != state and r not in carried:  # another state keeps its own loop (the cell state)
                merged[r] = state

    def final(r):
        while r in merged:
            r = merged[r]
        return r

    roots = {graph.index[x] for x in graph.roots}
    used = {final(role[i]) for k, i, _ in links} | {final(role[i]) for i in roots if i in role}
    used |= {final(role[k]) for k, i, _ in links if k in role}
    nodes, ids, step_roles = {}, {}, set()
    for i in range(len(tensors)):  # one node per role, numbered in walk order
        r = role.get(i)
        if r is None or r in ids or r not in used:
            continue
        ids[r] = f"r{len(ids)}"
        t = tensors[i]
        if t.step is not None:
            step_roles.add(ids[r])
        nodes[ids[r]] = Node(ids[r], role_label[r], _kind(t, labels.get(i) is not None), None, t.shape)
    out, seen = [], {}
    for (tail, head, recurrent), params in edges.items():
        tail, head = final(tail), final(head)
        if tail not in ids or head not in ids or (tail == head and not recurrent):
            continue
        merged_params = seen.setdefault((ids[tail], ids[head], recurrent), [])
        for p in params:
            _append_new(merged_params, p)
    for (tail, head, recurrent), params in seen.items():
        label = ", ".join(_param_name(p) for p in params)
        norms = [_grad_norm(p) for p in params]
        norm = max((n for n in norms if n is not None), default=None)
        kind = "state" if recurrent else ("weight" if params else "data")
        if not label and tail in step_roles and head not in step_roles:  # all steps meet: L = Σ_t L(t)
            label = f"t = {graph.steps[0]}…{graph.steps[-1]}" if graph.steps else ""
        out.append(Edge(tail, head, kind, label, norm))
        if recurrent and nodes[tail].kind in ("value", "op"):
            nodes[tail].kind = "state"
    # parameters that enter a role on no labelled edge (the biases b, c) become a note on that role
    on_edges = {id(p) for params in seen.values() for p in params}
    for r, params in loose.items():
        r = final(r)
        if r in ids and ids[r] in nodes:
            extra = []
            for p in params:
                if id(p) not in on_edges and _param_name(p) not in extra:
                    extra.append(_param_name(p))
            if extra:
                nodes[ids[r]].note = "+ " + ", ".join(extra)
    for node in nodes.values():
        if node.kind in ("value", "op") and node.shape == ():
            node.kind = "loss"
    steps = graph.steps
    title = f"rolled graph: the {len(steps)} steps laid on one another" if steps else "rolled graph"
    return View("rolled", nodes, out, outside=list(nodes), title=title)


def _partners(t, n, copies):
    """The copies that enter op t together with its input n: for affine (x₁, w₁, x₂, w₂, …, b) and linear
    (x, w, b) the weight paired with that input (s(t−1) goes through W(t), x(t) through U(t)); for other
    ops all of them."""
    if t.op.pairs:  # (x₁, w₁, …[, bias]), as the op declares (tensor.Op)
        partner = t.parents[n + 1] if n % 2 == 0 and n + 1 < len(t.parents) else None
        return [partner] if partner is not None and is_copy(partner) else []
    return copies


def _append_new(items, x):
    """Append unless already there, by identity (Tensors are compared by identity, never by value)."""
    if not any(y is x for y in items):
        items.append(x)


def _input_key(p, step, role, index):
    """How an unnamed op's input enters its structural key: copies by parameter, values from earlier steps
    (the carried state) all alike, so that the same op at every step gets the same key."""
    if is_copy(p):
        return ("copy", index[p.parents[0]])
    if p.step != step:
        return ("carried",)
    return role.get(index[p], ("leaf", index[p]))


def _between(start, end, within):
    """Roles on some within-step path start → … → end (both included when such a path exists)."""
    reach, stack = {start}, [start]
    while stack:  # forward from start
        r = stack.pop()
        for n in within.get(r, ()):
            if n not in reach:
                reach.add(n)
                stack.append(n)
    if end not in reach:
        return set()  # the carried value feeds something the state does not depend on: keep it apart
    backward = {}
    for r, heads in within.items():
        for h in heads:
            backward.setdefault(h, []).append(r)
    back, stack = {end}, [end]
    while stack:  # backward from end, inside what start reaches
        r = stack.pop()
        for n in backward.get(r, ()):
            if n in reach and n not in back:
                back.add(n)
                stack.append(n)
    return back
