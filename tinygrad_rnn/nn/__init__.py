"""Modules: PyTorch-like building blocks that record unrolled graphs with per-step copies."""
from .module import Module  # noqa: F401
from .rnn import RNN, RNNOutput  # noqa: F401
