"""BPTT analysis: every formula of the lectures computed on a real network and checked against the engine.

- jacobian, vjp: reverse-mode Jacobians of any function built with the engine's ops
- state_jacobian, step_jacobian(s), all_state_jacobians, explicit_grad: ∂s_t/∂s_k (an LSTM's (h, c),
  its blocks and the c → c carousel), diag(σ'(a_j)) Wᵀ, the immediate ∂⁺s_k/∂P; convention="column"
- contributions, contribution_norms, step_grads: C[t−1, k−1] = ∂L_t/∂P(k), the BPTT double sum
- decompose: ∂s_t/∂W = Σ_k ∂s_t/∂s_k · ∂⁺s_k/∂W term by term, checked against finite differences
- gradient_flow: ‖∂s_t/∂s_k‖ against the bound (γλ)^{t−k}, fitted rate and a vanishing/exploding verdict
- gradient_vs_gap, tasks: ‖∂L_T/∂s_k‖ against T − k (tasks: per cell, before and after training a task)
- truncated_bptt, tbptt, truncated_contributions, truncated_gradcheck, truncation_bias (segments of k,
  τ terms per loss, TBPTT(k1, k2)), clip_grad_norm
- plot_contributions, plot_gradient_flow, plot_step_grads, plot_gradient_vs_gap: matplotlib Figures
- record: the same analysis for the taggers, the classifier and the Seq2Seq encoder

All of them take an RNNOutput of nn.RNN (cell "rnn", "gru" or "lstm") or a Recording, and recompute on
a float64 twin of the model that runs the model's own cell, so they work after L.backward() and never
change any parameter's .grad.
"""
from ..optim import clip_grad_norm  # noqa: F401  (re-exported: truncated BPTT usually clips)
from .contributions import (contribution_norms, contribution_rows, contributions,  # noqa: F401
                            loss_state_gradients, step_grads)
from .decompose import Decomposition, decompose  # noqa: F401
from .examples import hello_sequence  # noqa: F401
from .flow import GradientFlow, gradient_flow, gradient_vs_gap  # noqa: F401
from .jacobians import (all_state_jacobians, explicit_grad, jacobian, state_jacobian,  # noqa: F401
                        state_jacobian_rows, step_jacobian, step_jacobians, vjp)
from .plots import plot_contributions, plot_gradient_flow, plot_gradient_vs_gap, plot_step_grads  # noqa: F401
from .recording import Recording, record, recording  # noqa: F401
from .truncation import (TruncationBias, tbptt, truncated_bptt, truncated_contributions,  # noqa: F401
                         truncated_gradcheck, truncation_bias, truncation_mask)
