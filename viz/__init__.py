"""viz: draw the recorded (unrolled) graph of a tinygrad_rnn computation with Graphviz.

    import viz
    g = viz.draw(L, view="unrolled")               # graphviz.Digraph; shows inline in Jupyter
    viz.render(L, "hello.pdf", view="rolled")      # .pdf .svg .png (need Graphviz's `dot`) or .dot
    viz.keep_gradients(L); L.backward()            # optional: the engine's own ∂L/∂· on every node

Views: "unrolled" (one box per time step, copies W(t) inside, Σ edges into the shared W), "rolled"
(x → s → y with the self-loop W), "ops" (every op with its shape, grouped by step). Modules: graph (the
walk), view (what is drawn, as data), names (labels), replay (gradients of intermediates after a plain
backward), colours (viridis + LogNorm), layout (rows and time order for dot), row_sums (a wrapped drawing's
per-row partial sums Σ W(1…t)), dot (the DOT source),
render (draw/render). Graphviz is imported only when drawing, matplotlib only if its colormap data file
cannot be read (viz.colours), so `import viz` and a first draw stay cheap.
"""
from .examples import EXAMPLES, example, write_demo_figures  # noqa: F401
from .render import FORMATS, GraphvizNotFound, draw, render  # noqa: F401
from .replay import keep_gradients  # noqa: F401
from .view import DEFAULT_MAX_STEPS, VIEWS, View, build_view  # noqa: F401
