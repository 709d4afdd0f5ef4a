"""Factored weight gradients: the whole rule, in one place.

Through `y = s @ W` the gradient of W is `sᵀ @ δ`. Per step at batch 1 that is an outer product
(d×1 @ 1×d), numpy's slowest shape, and T of them cost T·d² memory. Kept as factors instead, the
gradients of all copies W(1..T) meet at the shared W as one stacked GEMM
`[s_0 … s_{T-1}]ᵀ @ [δ_1 … δ_T]` — what fused RNN kernels do — and a copy's own dense gradient is
formed only when someone reads `W(t).grad`.

The rule, step by step, and the function that owns each step:
- when:      a 2-D weight whose gradient ends at a leaf or a per-step copy            `plan`
- snapshot:  a leaf's factor (an input batch, a learned s0) may be refilled by its
             owner before the gradient is read, so that factor is copied; graph values
             are never changed in place without the in-place check noticing             `plan`, `weight_grad`
- summing:   factors stay factors (T copies' gradients merge in linear time)          `accumulate`
- ownership: only the sweep's running sum may grow in place; a gradient stored in a
             .grad, or passed on while kept, is frozen                                  `accumulate`, `kept`, `stored`
- forming:   the dense matrix when read (`dense`), or at a leaf as chunked stacked
             GEMMs that share stacked right factors (U and W share δ_t)                 `OuterSum.value`, `formed`
- transposes: the backward's g·Wᵀ multiplies by a contiguous Wᵀ made once per sweep   `transposed`, `transposes`
"""
import contextvars

import numpy as np

CHUNK_BYTES = 8 << 20

# how `weight_grad` forms ∂L/∂w (decided in the forward by `plan`)
DENSE, FACTORS, FACTORS_SNAPSHOT = 0, 1, 2


class OuterSum:
    """The matrix Σ_i lefts[i]ᵀ @ rights[i], each factor a 2-D array of rows."""
    __slots__ = ("lefts", "rights", "owned")

    def __init__(self, lefts, rights, owned=False):
        self.lefts, self.rights = lefts, rights
        # owned: only the backward walk's running sum holds this object, so it may grow in place
        # (summing T copies' factors stays linear in T); anything stored in a .grad is not owned.
        self.owned = owned

    def merged(self, other):
        if self.owned:
            self.lefts.extend(other.lefts)
            self.rights.extend(other.rights)
            return self
        return OuterSum(self.lefts + other.lefts, self.rights + other.rights, owned=True)

    def value(self, dtype=None, stacks=None):
        """The dense matrix, in `dtype` (the parameter's: a float64 input must not make W.grad float64).

        The factors are stacked in chunks of about CHUNK_BYTES of right factors, so the stacking copies stay
        small next to the graph (at B = 64, d = 1024, T = 50 one stack of all factors would be 25 MB) while
        each GEMM still gets thousands of rows. `stacks` (a dict, optional) passes the stacked right factors
        from one gradient to the next formed in the same backward: U and W of an RNN cell share theirs (δ_t)."""
        lefts, rights = self.lefts, self.rights
        if len(lefts) == 1:
            out = lefts[0].T @ rights[0]
            return out if dtype is None else out.astype(dtype, copy=False)
        previous = {}
        if stacks is not None:  # keep only this gradient's stacks afterwards (memory), reuse the last one's
            previous = dict(stacks)
            stacks.clear()
        out, start, size = None, 0, 0
        for i, b in enumerate(rights):
            size += b.nbytes
            if size >= CHUNK_BYTES or i == len(rights) - 1:
                chunk = rights[start:i + 1]
                key = tuple(map(id, chunk))  # (the factors are alive meanwhile: their ids are theirs)
                stacked = previous.get(key)
                if stacked is None:
                    stacked = np.concatenate(chunk)
                if stacks is not None:
                    stacks[key] = stacked
                part = np.concatenate(lefts[start:i + 1]).T @ stacked
                out = part if out is None else np.add(out, part, out=out)
                start, size = i + 1, 0
        return out if dtype is None else out.astype(dtype, copy=False)

    @property
    def shape(self):
        return (self.lefts[0].shape[1], self.rights[0].shape[1])


# --- when, and how ---------------------------------------------------------------------------------

def plan(x, w):
    """How ∂L/∂w of x @ w will be formed (decided in the forward, from the nodes): as factors when w is a
    matrix whose gradient ends at a leaf or a per-step copy (where gradients are kept and summed, never fed
    into another op's backward), with x's array snapshotted when x is a leaf."""
    op = w.op
    if w.data.ndim != 2 or not (op is None or op.is_copy):
        return DENSE
    return FACTORS_SNAPSHOT if x.op is None else FACTORS


def weight_grad(x, g, how):
    """∂L/∂w of x @ w for 2-D (or 1-D) arrays x and g: xᵀ g, or its factors (OuterSum); `how` from `plan`."""
    if how == DENSE:
        return np.outer(x, g) if x.ndim == 1 else x.T.dot(g)
    if x.ndim == 1:
        x, g = x[None, :], g[None, :]
    return OuterSum([x.copy() if how == FACTORS_SNAPSHOT else x], [g])


# --- summing and ownership ----------------------------------------------------------------------------

def accumulate(old, new):
    """old + new for two gradients of one node (None: none yet); factored ones stay factored while both are."""
    if old is None:
        return new
    old_factored, new_factored = type(old) is OuterSum, type(new) is OuterSum
    if old_factored and new_factored:
        return old.merged(new)
    if old_factored or new_factored:
        return dense(old) + dense(new)
    return old + new


def kept(g):
    """g, about to be stored in a .grad and also passed on (a copy's, a retained node's): from now on
    nobody may grow it in place."""
    if type(g) is OuterSum:
        g.owned = False
    return g


def stored(g, node):
    """What goes into node's .grad for a (first or summed) gradient g. A dense g may be a buffer other
    nodes also hold (add passes its `g` to both inputs): copy it, so that in-place updates of one .grad
    never change another; factors stay factors (formed on first read)."""
    if type(g) is OuterSum:
        g.owned = False
        return g
    if node._grad is None or g.dtype != node.data.dtype:
        return np.array(g, dtype=node.data.dtype)
    return np.asarray(g)  # (old + g of two 0-d arrays is a numpy scalar: keep .grad an array)


# --- forming -------------------------------------------------------------------------------------------

def dense(g, dtype=None):
    """g as an array (factors are multiplied out), in `dtype` when given."""
    if type(g) is OuterSum:
        return g.value(dtype)
    return g


def formed(g, dtype, stacks):
    """A leaf's gradient at the end of a backward: one dense array, its stacked GEMMs sharing `stacks`."""
    return g.value(dtype, stacks) if type(g) is OuterSum else g


def all_finite(g):
    """Whether every entry of g is finite (factors are checked as they are, without forming g)."""
    if type(g) is OuterSum:
        return all(np.isfinite(a).all() for a in g.lefts + g.rights)
    return bool(np.isfinite(g).all())


# --- the contiguous transposes of one backward ------------------------------------------------------

# during a backward sweep in this thread: {id(w): (w, contiguous wᵀ)} (a context variable: per thread)
_transposes = contextvars.ContextVar("tinygrad_rnn.transposes", default=None)


def transposed(w):
    """wᵀ as a C-contiguous array, made once per backward and shared by every step that uses w: BLAS
    multiplies by a contiguous operand up to twice as fast (g·Wᵀ at B = 32, d = 128: 6 µs instead of
    14 µs). Outside a backward (e.g. a hand-called closure), the plain view."""
    cache = _transposes.get()
    if cache is None:
        return w.T
    hit = cache.get(id(w))
    if hit is None:
        hit = cache[id(w)] = (w, np.ascontiguousarray(w.T))  # (w kept: its id cannot be reused meanwhile)
    return hit[1]


class transposes:
    """Context manager around one backward sweep: `transposed` caches within it (per thread)."""

    def __enter__(self):
        self._token = _transposes.set({})
        return self

    def __exit__(self, *exc):
        _transposes.reset(self._token)
        return False
