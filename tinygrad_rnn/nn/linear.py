"""Linear and Embedding layers.

Layout: the engine uses the lecture's row-vector convention (`y = x U`), so `Linear.weight` is stored as
(in_features, out_features) and `y = x @ weight + bias` — the transpose of torch.nn.Linear's (out, in).
load_torch/to_torch transpose. Keeping the weight on the right of the matmul lets its per-step copies'
gradients meet at the shared weight as one GEMM (see lazy.py).
"""
import numpy as np

from ..ops import affine
from ..tensor import Parameter, Tensor
from .module import Module


def uniform_init(rng, bound, shape, dtype):
    """PyTorch's default for Linear biases and recurrent layers: U(−bound, bound)."""
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def check_features(op, x, size, name="input"):
    if x.ndim == 0 or x.shape[-1] != size:
        raise ValueError(f"{op}: {name} must have {size} features in its last axis, "
                         f"got shape {tuple(x.shape)}")


def as_input(x, dtype):
    """Arrays and lists enter the graph as constants of the layer's dtype."""
    return x if isinstance(x, Tensor) else Tensor(np.asarray(x, dtype=dtype))


class Linear(Module):
    """y = x @ weight + bias, weight (in_features, out_features), bias (out_features,).

    Initialised as torch.nn.Linear: U(±1/√in_features) from np.random.default_rng(seed).
    """

    def __init__(self, in_features, out_features, bias=True, seed=None, dtype=np.float32):
        self.in_features, self.out_features = in_features, out_features
        rng = np.random.default_rng(seed)
        bound = 1 / np.sqrt(in_features)
        self.weight = Parameter(uniform_init(rng, bound, (in_features, out_features), dtype), name="weight")
        self.bias = Parameter(uniform_init(rng, bound, (out_features,), dtype), name="bias") if bias else None

    def forward(self, x):
        x = as_input(x, self.weight.dtype)
        check_features("Linear", x, self.in_features)
        return affine([(x, self.weight)], self.bias)  # x @ weight + bias as one node

    def __repr__(self):
        return f"Linear(in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None})"

    def load_torch(self, linear):
        """Copy the weights of a torch.nn.Linear (weight (out, in) is transposed)."""
        expected = (self.out_features, self.in_features)
        _check_torch_shape("Linear.load_torch", "weight", linear.weight, expected)
        self.weight.data = _numpy(linear.weight, self.weight.dtype).T.copy()
        if self.bias is None and linear.bias is not None:
            raise ValueError("Linear.load_torch: the torch module has a bias but this Linear has none "
                             "(make it with bias=True)")
        if self.bias is not None:
            if linear.bias is None:
                raise ValueError("Linear.load_torch: this Linear has a bias but the torch module has none")
            self.bias.data = _numpy(linear.bias, self.bias.dtype)
        return self

    def to_torch(self):
        """An equivalent torch.nn.Linear with these weights."""
        import torch
        linear = torch.nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                                 dtype=_torch_dtype(self.weight.dtype))
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(self.weight.data.T.copy()))
            if self.bias is not None:
                linear.bias.copy_(torch.from_numpy(self.bias.data))
        return linear


class Embedding(Module):
    """A lookup table: ids (any integer shape) → rows of weight (num_embeddings, embedding_dim).
    Initialised N(0, 1) as torch.nn.Embedding. Its gradient adds up over repeated ids."""

    def __init__(self, num_embeddings, embedding_dim, seed=None, dtype=np.float32):
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        rng = np.random.default_rng(seed)
        table = rng.standard_normal((num_embeddings, embedding_dim)).astype(dtype)
        self.weight = Parameter(table, name="weight")

    def forward(self, ids):
        ids = np.asarray(ids.data if isinstance(ids, Tensor) else ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"Embedding: ids must be integers, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_embeddings):
            raise ValueError(f"Embedding: ids must be in [0, {self.num_embeddings}), "
                             f"got values in [{ids.min()}, {ids.max()}]")
        return self.weight[ids]

    def __repr__(self):
        return f"Embedding({self.num_embeddings}, {self.embedding_dim})"

    def load_torch(self, embedding):
        _check_torch_shape("Embedding.load_torch", "weight", embedding.weight,
                           (self.num_embeddings, self.embedding_dim))
        self.weight.data = _numpy(embedding.weight, self.weight.dtype)
        return self

    def to_torch(self):
        import torch
        embedding = torch.nn.Embedding(self.num_embeddings, self.embedding_dim,
                                       dtype=_torch_dtype(self.weight.dtype))
        with torch.no_grad():
            embedding.weight.copy_(torch.from_numpy(self.weight.data))
        return embedding


# --- torch helpers (torch is imported only by the interop methods) -------------------------------

def _numpy(t, dtype):
    return np.array(t.detach().cpu().numpy(), dtype=dtype, copy=True)


def _torch_dtype(dtype):
    import torch
    return {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[np.dtype(dtype)]


def _check_torch_shape(op, name, tensor, expected):
    if tuple(tensor.shape) != tuple(expected):
        raise ValueError(f"{op}: torch {name} has shape {tuple(tensor.shape)}, expected {tuple(expected)}")
