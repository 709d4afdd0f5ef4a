"""Regenerate the README's figures: `.venv/bin/python docs/make_figures.py` (needs Graphviz's `dot`; the
side-by-side figure also needs torchviz, the `docs` extra: `pip install torchviz`).

docs/hello-unrolled.png   the lecture's "hello" RNN unrolled over T = 4, coloured after a plain backward
docs/hello-rolled.png     the same recorded graph, rolled
docs/hello-wrapped.png    hello over T = 12, wrapped into rows of 4: each row sums its copies (Σ W(1…4), …)
docs/torchviz-vs-viz.png  torchviz's make_dot of the same RNN written in PyTorch (one W node, T edges into
                          it: the per-step copies are invisible) above this project's view
"""
import io
import os

import numpy as np

import viz
from viz.examples import title, tokens

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_WIDTH = 1600  # px: reads on a page


def png(graph, dpi):
    graph.attr(dpi=str(dpi))
    return graph.pipe(format="png")


def fitting_png(graph, dpi=96):
    """PNG bytes of `graph`, at a resolution that keeps it at most MAX_WIDTH pixels wide."""
    import matplotlib.image as mpimg
    data = png(graph, dpi)
    width = mpimg.imread(io.BytesIO(data)).shape[1]
    return data if width <= MAX_WIDTH else png(graph, int(dpi * MAX_WIDTH / width))


def torch_lecture_rnn(model, xs, targets):
    """The lecture RNN in PyTorch with the same weights: a_t = x_t U + s_{t−1} W + b, as one would write it."""
    import torch
    U, W, b, V, c = (torch.tensor(np.asarray(p.data, dtype=np.float64), requires_grad=True)
                     for p in (model.U, model.W, model.b, model.V, model.c))
    s, losses = torch.zeros(W.shape[0], dtype=torch.float64), []
    for x, k in zip(xs, targets):
        s = torch.tanh(torch.tensor(x, dtype=torch.float64) @ U + s @ W + b)
        losses.append(torch.nn.functional.cross_entropy((s @ V + c)[None], torch.tensor([int(k)])))
    return sum(losses), {"U": U, "W": W, "b": b, "V": V, "c": c}


def highlight(dot, name, colour="#d62728"):
    """Colour the parameter `name` of a torchviz make_dot graph, its AccumulateGrad node and that node's
    edges (one per use of the parameter), so the T edges into the one W stand out in a small figure."""
    import re
    ids = [re.match(r"\t(\w+) \[label=", line).group(1) for line in dot.body
           if line.startswith("\t") and f'[label="{name}\n' in line]
    for line in list(dot.body):
        m = re.match(r"\t(\w+) -> (\w+)\n", line)
        if m and m.group(1) in ids and m.group(2) not in ids:
            ids.append(m.group(2))
    for k, line in enumerate(dot.body):
        m = re.match(r"\t(\w+)( -> \w+)?( \[.*)?\n", line)
        if m and m.group(1) in ids:
            extra = f"color=\"{colour}\" penwidth=3" if m.group(2) else \
                f"fillcolor=\"{colour}\" style=filled fontcolor=white"
            body = line.rstrip("\n")
            dot.body[k] = (body[:-1] + f" {extra}]" if body.endswith("]") else body + f" [{extra}]") + "\n"
    return dot


def one_above_the_other(top_png, bottom_png, path):
    """The two drawings, each as wide as the figure (MAX_WIDTH px), with their captions."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt
    top, bottom = (mpimg.imread(io.BytesIO(p)) for p in (top_png, bottom_png))
    ratios = [image.shape[0] / image.shape[1] for image in (top, bottom)]
    width = MAX_WIDTH / 100
    fig, axes = plt.subplots(2, 1, figsize=(width, width * sum(ratios) + 1.2), dpi=100,
                             gridspec_kw={"height_ratios": ratios})
    for ax, image, caption in zip(axes, (top, bottom), (
            "torchviz make_dot of the same RNN in PyTorch: one W node (red) with T = 4 edges out of its "
            "AccumulateGrad — the per-step copies W(t) are invisible",
            "viz (tinygrad_rnn): the copies W(1) … W(4) in their steps, each with ‖∂L/∂W(t)‖, "
            "and Σ into the one shared W")):
        ax.imshow(image)
        ax.set_title(caption, fontsize=12)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main():
    L, out = viz.example("hello")
    inputs, targets = tokens("hello")
    paths = []
    for view in ("unrolled", "rolled"):
        path = os.path.join(HERE, f"hello-{view}.png")
        graph = viz.draw(L, view=view, title=title("hello", view, out.T), inputs=inputs, targets=targets)
        with open(path, "wb") as f:
            f.write(fitting_png(graph))
        paths.append(path)
    L12, out12 = viz.example("hello", steps=12)
    inputs12, targets12 = tokens("hello", 12)
    path = os.path.join(HERE, "hello-wrapped.png")
    with open(path, "wb") as f:
        f.write(fitting_png(viz.draw(L12, title=title("hello", "unrolled", out12.T) + ", wrapped into rows",
                                     inputs=inputs12, targets=targets12)))
    paths.append(path)
    try:
        from torchviz import make_dot
    except ImportError:
        print("torchviz is not installed (pip install torchviz): skipped docs/torchviz-vs-viz.png")
        return paths
    torch_loss, params = torch_lecture_rnn(out.model, out.inputs, out.targets)
    theirs = highlight(make_dot(torch_loss, params=params), "W")
    theirs.graph_attr["rankdir"] = "LR"  # wide and low, to sit above ours
    ours = viz.draw(L, sigma=("W",), inputs=inputs, targets=targets, title="viz: hello unrolled, Σ edges of W")
    path = os.path.join(HERE, "torchviz-vs-viz.png")
    one_above_the_other(png(theirs, 96), png(ours, 96), path)
    return paths + [path]


if __name__ == "__main__":
    for p in main():
        print("wrote", os.path.relpath(p))
