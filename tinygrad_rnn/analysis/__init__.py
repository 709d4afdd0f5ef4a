"""BPTT analysis: every formula of the lectures computed on a real network and checked against the engine.

- jacobian, vjp: reverse-mode Jacobians of any function built with the engine's ops
- state_jacobian, step_jacobian, explicit_grad: ∂s_t/∂s_k, diag(σ'(a_j)) Wᵀ and the immediate ∂⁺s_k/∂W
- contributions, contribution_norms: C[t−1, k−1] = ∂L_t/∂P(k), the BPTT double sum as a (T, T) table
- gradient_flow: ‖∂s_t/∂s_k‖ against the bound (γλ)^{t−k}, fitted rate and a vanishing/exploding verdict
- truncated_bptt, truncated_contributions, truncated_gradcheck, truncation_bias, clip_grad_norm
- plot_contributions, plot_gradient_flow, plot_step_grads: matplotlib Figures

All of them recompute from an RNNOutput on a float64 twin of the model, so they work after
L.backward() and never change any parameter's .grad.
"""
from ..optim import clip_grad_norm  # noqa: F401  (re-exported: truncated BPTT usually clips)
from .contributions import contribution_norms, contribution_rows, contributions, step_grads  # noqa: F401
from .examples import hello_sequence  # noqa: F401
from .flow import GradientFlow, gradient_flow  # noqa: F401
from .jacobians import (all_state_jacobians, explicit_grad, jacobian, state_jacobian,  # noqa: F401
                        state_jacobian_rows, step_jacobian, vjp)
from .plots import plot_contributions, plot_gradient_flow, plot_step_grads  # noqa: F401
from .truncation import (TruncationBias, truncated_bptt, truncated_contributions,  # noqa: F401
                         truncated_gradcheck, truncation_bias)
