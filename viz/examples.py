"""The lecture's two small networks, recorded (and back-propagated) ready to draw.

"hello": inputs "hell" → targets "ello" over [h, e, l, o]; "deep": "deep" → "eep<stop>" over
[d, e, p, <stop>]. With steps=T the text repeats ("hellohello…", "deep<stop>deep…") to T inputs, each
target the next token.
"""
EXAMPLES = ("hello", "deep")
_TEXT = {"hello": list("hello"), "deep": ["d", "e", "e", "p", "<stop>"]}


def example(name="hello", steps=None, hidden=3, seed=0, backward=True):
    """(L, out): the loss and RNNOutput of the named example over `steps` steps (default 4, as on the slides).

    backward=True runs a plain L.backward() (no retain_grad): the drawing still colours the states
    a(t), s(t), y(t), L(t), whose gradients viz recovers from the recorded graph.
    """
    from tinygrad_rnn import nn
    from tinygrad_rnn.data import CharVocab
    from tinygrad_rnn.demo import hello_example

    if name not in EXAMPLES:
        raise ValueError(f"viz.example: unknown example {name!r}; choose one of {EXAMPLES}")
    if steps is not None and (int(steps) != steps or steps < 1):
        raise ValueError(f"viz.example: steps must be a positive integer, got {steps!r}")
    if name == "hello":
        model, xs, targets, vocab = hello_example(hidden=hidden, seed=seed)
    else:
        vocab = CharVocab(["d", "e", "p", "<stop>"])
        model = nn.RNN(len(vocab), hidden, len(vocab), seed=seed)
        xs, targets = vocab.one_hot(["d", "e", "e", "p"]), vocab.encode(["e", "e", "p", "<stop>"])
    if steps is not None:
        text = _TEXT[name]
        tokens = [text[k % len(text)] for k in range(int(steps) + 1)]
        xs, targets = vocab.one_hot(tokens[:-1]), vocab.encode(tokens[1:])
    L, out = model.loss(xs, targets)
    if backward:
        L.backward()  # plain: viz recovers ∂L/∂s(t), ∂L/∂a(t), … itself (viz.replay)
    return L, out


def tokens(name="hello", steps=None):
    """(inputs, targets): the characters the named example reads and predicts at steps 1..T, for
    draw(inputs=, targets=): x(1) = 'h', target 'e'."""
    text = _TEXT[name]
    T = 4 if steps is None else int(steps)
    sequence = [text[k % len(text)] for k in range(T + 1)]
    return sequence[:-1], sequence[1:]


def title(name, view, T):
    """A caption for an example's drawing, e.g. 'hello: "hell" → "ello", unrolled over T = 4 steps'."""
    text = {"hello": '"hell" → "ello"', "deep": '"deep" → "eep<stop>"'}[name]
    how = {"unrolled": f"unrolled over T = {T} steps", "rolled": f"rolled (T = {T})",
           "ops": f"every op, T = {T} steps"}[view]
    return f"{name}: {text}, {how}"


def write_demo_figures(out_dir="out", fallback_to_dot=True):
    """Render the hello network's unrolled and rolled views after backward; returns the paths written.

    Writes out_dir/hello-unrolled.pdf and out_dir/hello-rolled.pdf. When Graphviz's `dot` program is
    missing and fallback_to_dot is true, writes the .dot sources instead (and returns those paths).
    """
    import os

    from .render import GraphvizNotFound, render

    L, out = example("hello")
    paths = []
    for view in ("unrolled", "rolled"):
        path = os.path.join(out_dir, f"hello-{view}.pdf")
        inputs, targets = tokens("hello")
        options = dict(view=view, title=title("hello", view, out.T), inputs=inputs, targets=targets)
        try:
            paths.append(render(L, path, **options))
        except GraphvizNotFound:
            if not fallback_to_dot:
                raise
            paths.append(render(L, path[:-len(".pdf")] + ".dot", **options))
    return paths
