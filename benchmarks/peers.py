"""The same BPTT step in the libraries a user would pick instead of tinygrad_rnn, each written the way its own
users write it (its documentation's idioms). Optional: a library that is not installed is skipped with a note.

    jax_scan       jax.jit(jax.value_and_grad(loss)), the recurrence as one jax.lax.scan, one log_softmax
    hips_autograd  HIPS autograd's value_and_grad of a numpy loss with a Python time loop, CE per step
    mygrad         MyGrad tensors in a Python time loop, softmax_crossentropy per step, loss.backward()

Each `make_*(problem)` returns `step()` → `(loss, {"U": dU, "W": dW, "b": db, "V": dV, "c": dc})`, like the
implementations in implementations.py; `problem.weights` is a dict in the order U, W, b, V, c.
"""
import numpy as np


def make_jax_scan(p):
    import jax
    # float64 is off by default in jax; the gradient check runs in float64. Dtypes below are explicit, so the
    # float32 timing stays float32.
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    B, d = p.row.B, p.row.d
    X, targets = jnp.asarray(p.xs), jnp.asarray(p.targets)
    h0 = jnp.zeros((B, d), dtype=p.dtype)

    def loss_fn(params):
        U, W, b, V, c = params

        def cell(h, x):
            h = jnp.tanh(x @ U + h @ W + b)
            return h, h
        _, states = jax.lax.scan(cell, h0, X)                         # (T, B, d)
        log_probs = jax.nn.log_softmax(states @ V + c, axis=-1)
        return -jnp.take_along_axis(log_probs, targets[..., None], axis=-1).sum()

    value_and_grad = jax.jit(jax.value_and_grad(loss_fn))
    names = tuple(p.weights)
    params = tuple(jnp.asarray(w) for w in p.weights.values())

    def step():
        loss, grads = value_and_grad(params)
        grads = [np.asarray(g) for g in grads]                         # waits for the result (async dispatch)
        return float(loss), dict(zip(names, grads))
    return step


def make_hips_autograd(p):
    import autograd.numpy as anp
    from autograd import value_and_grad
    from autograd.scipy.special import logsumexp
    B, T, d = p.row.B, p.row.T, p.row.d
    X, targets, batch = p.xs, p.targets, np.arange(B)
    h0 = np.zeros((B, d), dtype=p.dtype)

    def loss_fn(params):
        U, W, b, V, c = params
        h, loss = h0, 0.0
        for t in range(T):
            h = anp.tanh(anp.dot(X[t], U) + anp.dot(h, W) + b)
            logits = anp.dot(h, V) + c
            loss = loss + anp.sum(logsumexp(logits, axis=1) - logits[batch, targets[t]])
        return loss

    value_and_grad_fn = value_and_grad(loss_fn)
    names, params = tuple(p.weights), list(p.weights.values())

    def step():
        loss, grads = value_and_grad_fn(params)
        return float(loss), dict(zip(names, grads))
    return step


def make_mygrad(p):
    import mygrad as mg
    from mygrad.nnet.losses import softmax_crossentropy
    B, T, d = p.row.B, p.row.T, p.row.d
    X, targets = p.xs, p.targets
    names, params = tuple(p.weights), [mg.Tensor(w.copy()) for w in p.weights.values()]
    h0 = np.zeros((B, d), dtype=p.dtype)

    def step():
        U, W, b, V, c = params
        h, loss = h0, None
        for t in range(T):
            h = mg.tanh(X[t] @ U + h @ W + b)
            loss_t = softmax_crossentropy(h @ V + c, targets[t]) * B     # it returns the batch mean
            loss = loss_t if loss is None else loss + loss_t
        loss.backward()                                                   # sets fresh .grad, clears the graph
        return loss.item(), {name: w.grad for name, w in zip(names, params)}
    return step
