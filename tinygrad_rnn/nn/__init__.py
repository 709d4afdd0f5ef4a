"""Modules: PyTorch-like building blocks that record unrolled graphs with per-step copies."""
from . import checkpoint  # noqa: F401
from .checkpoint import read_checkpoint  # noqa: F401
from .module import CheckpointError, Module, load_npz, save_npz  # noqa: F401
from .linear import Embedding, Linear  # noqa: F401
from .cells import GRUCell, LSTMCell, RNNCell, make_cell  # noqa: F401
from .rnn import RNN, RNNOutput  # noqa: F401
from .architectures import Encoder, Seq2Seq, SequenceClassifier, SequenceTagger, generate, unroll  # noqa: F401
from .one_to_many import OneToMany  # noqa: F401
