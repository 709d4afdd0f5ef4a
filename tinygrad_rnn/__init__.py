"""tinygrad_rnn: a small reverse-mode autodiff engine on numpy that makes BPTT visible and checkable."""
from .tensor import Parameter, Tensor, enable_grad, no_grad, is_grad_enabled  # noqa: F401
from .errors import AnomalyError, GraphFreedError, InplaceError, ShapeError  # noqa: F401
from .anomaly import detect_anomaly  # noqa: F401
from .ops import (affine, arange, chunk, concat, full, ones, ones_like, randn, split, stack, where,  # noqa: F401
                  zeros, zeros_like)
from .unroll import Unroll  # noqa: F401
from .gradcheck import gradcheck, GradcheckError  # noqa: F401
from . import functional  # noqa: F401
from . import nn  # noqa: F401

__version__ = "0.1.0"
