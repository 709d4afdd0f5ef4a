"""Factored weight gradients: the whole rule, in one place.

Through `y = s @ W` the gradient of W is `sᵀ @ δ`. Per step at batch 1 that is an outer product
(d×1 @ 1×d), numpy's slowest shape, and T of them cost T·d² memory. Kept as factors instead, the
gradients of all copies W(1..T) meet at the shared W as one stacked GEMM
`[s_0 … s_{T-1}]ᵀ @ [δ_1 … δ_T]` — what fused RNN kernels do — and a copy's own dense gradient is
formed only when someone reads `W(t).grad`.

The rule, step by step, and the function that owns each step:
- when:      a 2-D weight whose gradient ends at a leaf or a per-step copy            `plan`
- snapshot:  a leaf's factor (an input batch, a learned s0) may be refilled by its
             owner before the gradient is read, so that factor is copied; a graph value is
             kept with its version (a guard): a gradient formed from a value changed in place
             since (a detached state reset by `state *= 0`) raises InplaceError   `plan`, `weight_grad`, `guarded`
- summing:   factors stay factors (T copies' gradients merge in linear time)          `accumulate`
- ownership: only the sweep's running sum may grow in place; a gradient stored in a
             .grad, or passed on while kept, is frozen                                  `accumulate`, `kept`, `stored`
- forming:   the dense matrix when read (`dense`), or at a leaf as chunked stacked
             GEMMs that share stacked right factors (U and W share δ_t)                 `OuterSum.value`, `formed`
- transposes: the backward's g·Wᵀ multiplies by a contiguous Wᵀ made once per sweep   `transposed`, `transposes`
"""
import contextvars

import numpy as np

from .errors import InplaceError

CHUNK_BYTES = 8 << 20

# how `weight_grad` forms ∂L/∂w (decided in the forward by `plan`); the third kind, a guard, is a tuple
DENSE, FACTORS_SNAPSHOT = 0, 2


class OuterSum:
    """The matrix Σ_i lefts[i]ᵀ @ rights[i], each factor a 2-D array of rows; guards: (version box,
    version) of the graph values among the left factors (see `plan`)."""
    __slots__ = ("lefts", "rights", "owned", "guards")

    def __init__(self, lefts, rights, owned=False, guards=None):
        self.lefts, self.rights, self.guards = lefts, rights, [] if guards is None else guards
        # owned: only the backward walk's running sum holds this object, so it may grow in place
        # (summing T copies' factors stays linear in T); anything stored in a .grad is not owned.
        self.owned = owned

    def merged(self, other):
        if self.owned:
            self.lefts.extend(other.lefts)
            self.rights.extend(other.rights)
            self.guards.extend(other.guards)
            return self
        return OuterSum(self.lefts + other.lefts, self.rights + other.rights, True, self.guards + other.guards)

    def value(self, dtype=None, stacks=None):
        """The dense matrix, in `dtype` (the parameter's: a float64 input must not make W.grad float64).

        The factors are stacked in chunks of about CHUNK_BYTES of right factors, so the stacking copies stay
        small next to the graph (at B = 64, d = 1024, T = 50 one stack of all factors would be 25 MB) while
        each GEMM still gets thousands of rows. `stacks` (a dict, optional) passes the stacked right factors
        from one gradient to the next formed in the same backward: U and W of an RNN cell share theirs (δ_t)."""
        guarded(self.guards)
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
    into another op's backward), with x's array snapshotted when x is a leaf (FACTORS_SNAPSHOT), else
    kept with a guard: x's version box and its version now (the box is shared with x's views and
    detach(), so an in-place update through any of them is seen when the gradient is formed)."""
    op = w.op
    if w.data.ndim != 2 or not (op is None or op.is_copy):
        return DENSE
    if x.op is None:
        return FACTORS_SNAPSHOT
    box = x._versions
    if box is None:
        box = x._versions = [0]
    return (box, box[0])


def weight_grad(x, g, how):
    """∂L/∂w of x @ w for 2-D (or 1-D) arrays x and g: xᵀ g, or its factors (OuterSum); `how` from `plan`."""
    if how == DENSE:
        return np.outer(x, g) if x.ndim == 1 else x.T.dot(g)
    if x.ndim == 1:
        x, g = x[None, :], g[None, :]
    if how == FACTORS_SNAPSHOT:
        return OuterSum([x.copy()], [g])
    return OuterSum([x], [g], False, [how])


def guarded(guards):
    """Raise InplaceError if a graph value kept as a factor was changed in place since it was kept."""
    for box, version in guards:
        if box[0] != version:
            raise InplaceError(
                "grad: this gradient is kept as factors that include a value of the recorded graph, and that "
                f"value was modified by an in-place operation (version {box[0]}) after the forward recorded it "
                f"(version {version}), so the gradient would be wrong. Read .grad (or tape.step_grads) before "
                "updating, or update out of place (s = s * 0 instead of s *= 0).")


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
        guarded(g.guards)
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
