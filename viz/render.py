"""draw() -> graphviz.Digraph and render() -> a PDF/SVG/PNG/DOT file; a clear error when `dot` is missing."""
import os

from .names import display_name
from .view import DEFAULT_MAX_STEPS, Details, build_view

MAX_TITLE = 300

FORMATS = ("pdf", "svg", "png", "dot")

INSTALL_HINT = ("Install Graphviz (the `pip install graphviz` package is only the Python binding): "
                "Debian/Ubuntu `sudo apt-get install graphviz`, Fedora `sudo dnf install graphviz`, "
                "macOS `brew install graphviz`, conda `conda install -c conda-forge graphviz`, "
                "Windows https://graphviz.org/download/ (then add its bin folder to PATH). "
                "viz.draw() and .dot output work without it.")


class GraphvizNotFound(RuntimeError):
    """Graphviz's `dot` program is not on PATH, so a graph cannot be rendered to PDF/SVG/PNG."""


def draw(roots, view="unrolled", max_steps=DEFAULT_MAX_STEPS, show_grads=None, names=None, rankdir=None,
         title=None, model=None, wrap=None, sigma=None, show_values=False, inputs=None, targets=None):
    """The recorded graph behind `roots` as a graphviz.Digraph (shown inline in Jupyter; `.source` is DOT).

    Parameters
    ----------
    roots : Tensor or list of Tensors
        Usually the loss L; also works after L.backward() (the graph's structure survives backward).
    view : {"unrolled", "rolled", "ops"}
        "unrolled": one box per time step t = 1..T, left to right, holding that step's named tensors
        (x(t), a(t), s(t), y(t), L(t)) and its parameter copies W(t); shared parameters outside the boxes,
        with a Σ edge from each copy into its parameter. "rolled": the compact recurrent diagram
        x → s → y with the self-loop W on s. "ops": every recorded op with its shape, grouped by step.
    max_steps : int or None
        Steps drawn at most (default 12): the first and last steps are kept and the middle is folded into
        one "… k steps …" node, so T = 1000 draws in well under a second. None draws every step.
    show_grads : bool or None
        Colour by gradient norm (viridis, log scale) with a colour bar, and write ‖∂L/∂W(t)‖ under each
        copy's name. States and other intermediates are coloured too after a plain backward: viz.replay
        recovers their gradients. None (default): when any drawn tensor has a gradient (after backward).
    names : dict, optional
        {name: Tensor} labels for tensors without a `.name` (e.g. `names=locals()`); `.name` wins.
    model : Module, optional
        The model behind the graph: parameters whose bare names repeat (an encoder's and a decoder's W)
        are labelled by module path from model.named_parameters() (`encoder.cell.W(3)`); without it they
        are numbered (`W#1(3)`, `W#2(3)`).
    rankdir : str, optional
        Graphviz direction: "BT" (default: inputs at the bottom, time left to right, as on the slides),
        "TB" (inputs on top), "LR", "RL" (data flowing sideways, time running down the page).
    wrap : int or None
        Step boxes per row: long drawings wrap into rows like text (None, default: up to 6 boxes on one
        row, more in rows of at most 4, as even as can be — T = 12 is three rows of 4); 0 keeps one row
        however long. Wrapped rows sum their own copies into one "Σ W(1…t)" box per parameter at the
        row's end, chained row to row into W (viz.row_sums), so no Σ edge crosses another row.
    sigma : sequence of str, optional
        The shared parameters that get Σ edges from their copies (e.g. ("W",): the recurrence only);
        default all.
    show_values : bool
        Write each op's value (a scalar, or the first and last entries) under its label.
    inputs, targets : sequence of str, optional
        The tokens of a char example: x(t) is labelled with inputs[t-1] ('h'), L(t) with its target.
    title : str, optional
        The caption on top (default: the view, T and the folded steps).

    Returns
    -------
    graphviz.Digraph
    """
    from .dot import to_digraph
    details = Details(None if sigma is None else tuple(sigma), show_values, inputs, targets)
    drawing = build_view(roots, view, max_steps, show_grads, names, model, details)
    if title is not None:
        drawing.title = display_name(title, limit=MAX_TITLE)
    return to_digraph(drawing, rankdir=rankdir, wrap=wrap)


def render(roots, path, view="unrolled", format=None, **draw_options):
    """Draw (see `draw`) and write the graph to `path`; returns the path written.

    The format comes from the suffix (.pdf .svg .png .dot) unless `format` is given. .dot needs no Graphviz
    program; the others raise GraphvizNotFound with install instructions when `dot` is missing.
    """
    path = os.fspath(path)
    fmt = format or os.path.splitext(path)[1].lstrip(".").lower()
    if fmt == "gv":
        fmt = "dot"
    if fmt not in FORMATS:
        raise ValueError(f"viz.render: cannot tell the format of {path!r}: use a suffix or format= among "
                         f"{', '.join(FORMATS)}")
    graph = draw(roots, view, **draw_options)
    return write(graph, path, fmt)


def write(graph, path, fmt):
    """Write a graphviz.Digraph to `path` in `fmt` (pdf, svg, png or dot) without leaving other files."""
    import graphviz
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    if fmt == "dot":
        with open(path, "w", encoding="utf-8") as f:
            f.write(graph.source)
        return path
    try:
        data = graph.pipe(format=fmt)
    except graphviz.ExecutableNotFound as e:
        raise GraphvizNotFound(f"cannot render {path}: Graphviz's `dot` program was not found on PATH. "
                               + INSTALL_HINT) from e
    except graphviz.CalledProcessError as e:
        message = (e.stderr or b"").decode(errors="replace").strip()
        raise RuntimeError(f"viz: Graphviz failed to render {path} as {fmt}: {message}") from e
    with open(path, "wb") as f:
        f.write(data)
    return path
