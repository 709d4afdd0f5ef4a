"""The core's shape: imports point one way (no cycles, string imports included), recording state is per
thread, and the recorded graph is exactly what the engine recorded before the core redesign."""
import ast
import pathlib
import threading

import numpy as np
import pytest

import tinygrad_rnn
from tinygrad_rnn import Parameter, Tensor, Unroll, detect_anomaly, nn, no_grad
from tinygrad_rnn.errors import AnomalyError, InplaceError
from tinygrad_rnn.tensor import is_grad_enabled, topological_order

PACKAGE = pathlib.Path(tinygrad_rnn.__file__).parent
DATA = pathlib.Path(__file__).parent / "data"


# --- imports ---------------------------------------------------------------------------------------

def _module_imports(path):
    """The tinygrad_rnn modules a file imports (at any depth, relative or absolute, or by a string given to
    importlib.import_module)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    name = ".".join(("tinygrad_rnn",) + parts)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [(base, tuple(f"{base}.{alias.name}" for alias in node.names))]  # resolved in _graph
        elif isinstance(node, ast.Import):
            targets = [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("tinygrad_rnn."):
            targets = [(node.value, ())]  # importlib.import_module("tinygrad_rnn.x") and friends
        else:
            continue
        found.update(t for t in targets if t[0].startswith("tinygrad_rnn"))
    return name, found


def _graph():
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name, imports = _module_imports(path)
        modules[name] = imports
    known = set(modules)
    graph = {}
    for m, imports in modules.items():
        edges = set()
        for base, names in imports:  # `from pkg import mod` imports mod (and runs pkg's __init__ first)
            submodules = [n for n in names if n in known]
            edges.update(submodules or [base])
        graph[m] = {e for e in edges if e in known and e != m}
    return graph


ENGINE = ["errors", "recording", "lazy", "autograd", "tensor", "ops", "batched", "unroll", "anomaly",
          "functional", "gradcheck"]


def test_engine_modules_import_one_way():
    """The layers, bottom first: errors ← recording ← lazy ← autograd ← tensor ← ops ← batched, unroll;
    nothing imports a module above it (the package __init__ aside, which gathers the public names)."""
    graph = _graph()
    rank = {f"tinygrad_rnn.{m}": i for i, m in enumerate(ENGINE)}
    for module, imports in graph.items():
        if module not in rank:
            continue
        for imported in imports:
            if imported == "tinygrad_rnn":
                pytest.fail(f"{module} imports the package itself (its __init__ imports everything)")
            if imported in rank:
                assert rank[imported] < rank[module] or imported.endswith(("anomaly", "functional", "gradcheck")), \
                    f"{module} imports {imported}, which stands above it"
    for bottom in ("errors", "recording", "lazy", "autograd"):
        for imported in graph[f"tinygrad_rnn.{bottom}"]:
            assert rank.get(imported, 99) < rank[f"tinygrad_rnn.{bottom}"], (bottom, imported)


def test_no_import_cycles_among_the_package_modules():
    graph = _graph()
    graph.pop("tinygrad_rnn")  # the package __init__ gathers names from below; nothing below imports it
    for edges in graph.values():
        edges.discard("tinygrad_rnn")
    # iterative DFS with colours (no recursion)
    colour, path = {m: 0 for m in graph}, []
    for start in graph:
        if colour[start]:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        colour[start] = 1
        path.append(start)
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = 2
                stack.pop()
                path.pop()
                continue
            if colour.get(child) == 1:
                cycle = path[path.index(child):] + [child]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if colour.get(child) == 0:
                colour[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))


def test_no_engine_module_keeps_a_table_of_op_names():
    """What the engine knows about an op is declared beside it (tensor.Op), not in tables keyed by names."""
    for name in ("autograd", "tensor", "lazy", "recording"):
        source = (PACKAGE / f"{name}.py").read_text()
        for op_name in ('"copy"', '"affine"', '"matmul"', '"linear"', "SAVES", "BIAS_LAST"):
            assert op_name not in source, (name, op_name)


# --- the recorded graph is what it was before the redesign ----------------------------------------

def _listing(root):
    order = topological_order(root, grad_only=False)
    index = {id(n): i for i, n in enumerate(order)}
    lines = []
    for n in order:
        g = n.grad if (n.requires_grad and n._retains_grad) else None
        grad = "-" if g is None else np.array2string(np.asarray(g, dtype=np.float64).ravel()[:6], precision=6)
        lines.append(f"{index[id(n)]} {n.op} {n.name} step={n.step} rg={n.requires_grad} shape={n.shape} "
                     f"parents={[index[id(p)] for p in n.parents]} grad={grad}")
    return "\n".join(lines) + "\n"


def test_hello_graph_is_the_one_recorded_before_the_core_redesign():
    """Every node, in creation order, with its op, name, step, inputs and the first entries of its gradient:
    byte-identical to the listing the engine gave before the redesign (tests/data, from git 55f2de1)."""
    from tinygrad_rnn.demo import hello_example
    model, xs, targets, _ = hello_example(hidden=3, seed=0)
    L, out = model.loss(xs, targets)
    for t in out.preactivations + out.states[1:] + out.logits + out.losses:
        t.retain_grad()
    L.backward()
    assert _listing(L) == (DATA / "hello-4.graph").read_text()


def test_lstm_graph_is_the_one_recorded_before_the_core_redesign():
    rng = np.random.default_rng(0)
    rng.standard_normal((4, 2, 4))  # (the first two draws went to the GRU when the listing was made)
    rng.integers(0, 4, (4, 2))
    m = nn.RNN(4, 3, 4, cell="lstm", seed=1)
    xs = rng.standard_normal((4, 2, 4)).astype(np.float32)
    ts = rng.integers(0, 4, (4, 2))
    L, _ = m.loss(xs, ts)
    L.backward()
    assert _listing(L) == (DATA / "lstm.graph").read_text()


def test_nn_rnn_runs_its_cell_with_the_same_graph():
    model = nn.RNN(4, 3, 4, seed=0)
    assert model.cell.U is model.U and model.cell.W is model.W and model.cell.b is model.b
    xs = np.eye(4, dtype=np.float32)[[0, 1, 2, 2]]
    out = model.forward(xs)
    a, s = out.preactivations[0], out.states[1]
    assert a.op == "affine" and s.op == "tanh" and s.parents == (a,)
    np.testing.assert_allclose(s.data, model.cell(xs[0], out.states[0]).data, rtol=1e-6)


# --- recording state per thread -----------------------------------------------------------------------

def _train_once(seed, T=20):
    rng = np.random.default_rng(seed)
    model = nn.RNN(5, 8, 5, seed=seed, dtype=np.float64)
    xs = np.eye(5)[rng.integers(0, 5, (T, 3))]
    ts = rng.integers(0, 5, (T, 3))
    L, out = model.loss(xs, ts)
    L.backward()
    return [p.grad.copy() for p in model.parameters()], [c.grad.copy() for c in out.tape.copies(model.W)]


def test_threads_training_beside_no_grad_evaluation_get_single_threaded_gradients():
    expected = {seed: _train_once(seed) for seed in range(4)}
    errors, results = [], {}
    start = threading.Barrier(4, timeout=20)

    def trainer(seed):
        try:
            start.wait()
            for _ in range(15):
                results.setdefault(seed, []).append(_train_once(seed))
                assert is_grad_enabled()
        except Exception as e:  # noqa: BLE001  (reported below, in the main thread)
            errors.append(repr(e))

    def evaluator():
        try:
            start.wait()
            model = nn.RNN(5, 8, 5, seed=9, dtype=np.float64)
            for _ in range(60):
                with no_grad():
                    out = model.forward(np.eye(5)[[0, 1, 2, 3] * 5])
                    assert not is_grad_enabled() and not out.states[-1].requires_grad
                assert is_grad_enabled()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=trainer, args=(seed,)) for seed in (0, 1)]
    threads += [threading.Thread(target=evaluator) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    for seed in (0, 1):
        for grads, copy_grads in results[seed]:
            for got, want in zip(grads + copy_grads, expected[seed][0] + expected[seed][1]):
                np.testing.assert_array_equal(got, want)
    assert is_grad_enabled()


def test_overlapping_no_grad_blocks_in_two_threads_restore_each_threads_mode():
    inside, leave = threading.Barrier(2, timeout=20), threading.Barrier(2, timeout=20)
    seen = []

    def worker(order):
        with no_grad():
            inside.wait()
            if order:
                leave.wait()
        if not order:
            leave.wait()
        seen.append(is_grad_enabled())

    threads = [threading.Thread(target=worker, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert seen == [True, True] and is_grad_enabled()


def test_anomaly_mode_belongs_to_the_thread_that_entered_it():
    entered, done = threading.Event(), threading.Event()
    outcome = []

    def debugging():
        with detect_anomaly():
            entered.set()
            done.wait(10)

    def computing():
        entered.wait(10)
        x = Parameter(np.array([0.0]))
        with np.errstate(all="ignore"):
            outcome.append((x.log() * 0).data)  # -inf * 0 = NaN: an anomaly only where anomaly mode is on
        done.set()

    threads = [threading.Thread(target=debugging), threading.Thread(target=computing)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert np.isnan(outcome[0]).all()


def test_unroll_steps_in_two_threads_do_not_nest():
    W = Parameter(np.eye(3), name="W")
    inside = threading.Barrier(2, timeout=20)
    names, errors = [], []

    def record(tag):
        try:
            tape = Unroll(shared=[W])
            with tape:
                with tape.step(1):
                    inside.wait()
                    y = Tensor(np.ones(3)) @ W
            names.append((tag, y.parents[1].name, len(tape.copies(W))))
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=record, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and sorted(names) == [(0, "W(1)", 1), (1, "W(1)", 1)]


# --- issue 16's engine holes closed by the redesign -------------------------------------------------

def test_a_backward_failing_under_detect_anomaly_keeps_the_graph():
    x = Parameter(np.array([0.0, 1.0]))
    y = (x * x) ** 0.5            # ∂/∂x at 0 is 0 · inf = NaN
    loss = y.sum()
    with detect_anomaly(), pytest.raises(AnomalyError), np.errstate(all="ignore"):
        loss.backward()
    assert x.grad is None
    with np.errstate(all="ignore"):
        loss.backward()           # not "backward through the graph a second time"
    assert np.isnan(x.grad[0]) and x.grad[1] == 1


def test_an_inplace_update_through_a_tensor_sharing_the_array_is_caught():
    x = Parameter(np.array([1.0, 2.0]))
    c = Tensor(np.array([3.0, 4.0]))
    y = (x * c).sum()
    alias = Tensor(c)
    alias += 1
    with pytest.raises(InplaceError):
        y.backward()


def test_binary_cross_entropy_keeps_its_own_targets():
    from tinygrad_rnn import functional as F
    p = Parameter(np.array([0.2, 0.7]))
    t = np.array([0.0, 1.0])
    loss = F.binary_cross_entropy(p, t, reduction="sum")
    t[0] = 1
    loss.backward()
    np.testing.assert_allclose(p.grad, [1 / 0.8, -1 / 0.7])


def test_to_torch_twin_trains_like_the_model():
    torch = pytest.importorskip("torch")
    model = nn.RNN(4, 3, 4, seed=0, dtype=np.float64)
    twin = model.to_torch()
    xs = np.eye(4)[[0, 1, 2, 2, 3]]
    ts = np.array([1, 2, 2, 3, 0])
    sgd = torch.optim.SGD([p for p in twin.parameters() if p.requires_grad], lr=0.5)
    for _ in range(5):
        L, _ = model.loss(xs, ts)
        L.backward()
        with no_grad():
            for p in model.parameters():
                p.data = p.data - 0.5 * p.grad
                p.grad = None
        sgd.zero_grad()
        logits, _ = twin(torch.from_numpy(xs))
        torch.nn.functional.cross_entropy(logits, torch.from_numpy(ts), reduction="sum").backward()
        sgd.step()
    np.testing.assert_allclose(twin.rnn.bias_ih_l0.detach().numpy() + twin.rnn.bias_hh_l0.detach().numpy(),
                               model.b.data, rtol=1e-10)
    np.testing.assert_allclose(twin.rnn.weight_hh_l0.detach().numpy().T, model.W.data, rtol=1e-10)


def test_per_step_gradients_never_read_a_state_changed_in_place_after_backward():
    """Issue 16: copies' gradients are formed lazily from graph values; resetting the detached carried state
    in place (torch's h.zero_() idiom) must not silently change ∂L/∂V(4) or ∂L/∂W(t)."""
    model = nn.RNN(4, 3, 4, seed=0, dtype=np.float64)
    xs = np.eye(4)[[0, 1, 2, 2]]
    L, out = model.loss(xs, np.array([1, 2, 2, 3]))
    L.backward()
    copies_V = out.tape.copies(model.V)
    first_read = copies_V[0].grad.copy()           # read before the update: kept, right
    L2, out2 = model.loss(xs, np.array([1, 2, 2, 3]))  # the same forward again: the right W(t) gradients
    L2.backward()
    W_grads = out2.tape.step_grads(model.W)
    carried = out.states[-1].detach()               # s(4): the factor of V(4) only
    carried *= 0
    with pytest.raises(InplaceError, match="modified by an in-place operation"):
        copies_V[3].grad
    np.testing.assert_array_equal(copies_V[0].grad, first_read)
    np.testing.assert_array_equal(out.tape.step_grads(model.W), W_grads)  # W(t)'s factors s(0..3): untouched
    L3, out3 = model.loss(xs, np.array([1, 2, 2, 3]))
    L3.backward()
    middle = out3.states[2].detach()                # s(2): a factor of W(3) and V(2), not read yet
    middle *= 0
    with pytest.raises(InplaceError):
        out3.tape.step_grads(model.W)
    np.testing.assert_array_equal(out2.tape.step_grads(model.W), W_grads)  # read before: formed, stays right
