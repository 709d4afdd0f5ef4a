"""A weight gradient kept as its factors.

Through `y = s @ W` the gradient of W is `sᵀ @ δ`. Per step at batch 1 that is an outer product
(d×1 @ 1×d), numpy's slowest shape, and T of them cost T·d² memory. Kept as factors instead, the
gradients of all copies W(1..T) meet at the shared W as one stacked GEMM
`[s_0 … s_{T-1}]ᵀ @ [δ_1 … δ_T]` — what fused RNN kernels do — and a copy's own dense gradient is
formed only when someone reads `W(t).grad`.
"""
import numpy as np

CHUNK_BYTES = 8 << 20


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

