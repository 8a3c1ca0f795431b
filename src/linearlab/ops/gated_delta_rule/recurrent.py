"""State-passing gated delta rule for decoding (``fused_recurrent_*``).

Everything that does not depend on the state (casts, query scaling, decays) is done once for all
steps; each step is then one scale, two batched mat-vecs and one rank-1 update on a
``[B*H, K, V]`` state, so a ``T == 1`` decoding step costs the same at any context length.
"""

from __future__ import annotations

import torch

from linearlab.ops.gated_delta_rule._common import validate_and_run
from linearlab.ops.utils import state_dtype


def recurrent_core(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    scale: float,
    gk: torch.Tensor | None = None,
    gv: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Unchecked step loop; ``g=None`` means no decay (the delta rule).

    All inputs have the state's heads (grouped queries/keys already repeated): ``q, k: [B, T, H, K]``,
    ``v: [B, T, H, V]``, ``g, beta: [B, T, H]``, ``gk: [B, T, H, K]``, ``gv: [B, T, H, V]``.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    dt = state_dtype(q)

    def steps(x: torch.Tensor, *tail: int) -> torch.Tensor:
        """``[B, T, H, ...] -> [T, B*H, *tail]``: each step reads one contiguous slice."""
        return x.to(dt).transpose(0, 1).reshape(T, B * H, *tail)

    q_s = steps(q.to(dt) * scale, 1, K)
    k_s, v_s, b_s = steps(k, 1, K), steps(v, 1, V), steps(beta, 1, 1)
    # Decays, exponentiated once for all steps: the scalar and per-key gates act on the rows of
    # S (one [K, 1] factor, summed in log space), the per-value gate on its columns.
    log_rows = None if g is None else g.to(dt)[..., None, None]  # [B, T, H, 1, 1]
    if gk is not None:
        gk_rows = gk.to(dt)[..., None]  # [B, T, H, K, 1]
        log_rows = gk_rows if log_rows is None else log_rows + gk_rows
    a_rows = None if log_rows is None else steps(log_rows.exp(), log_rows.shape[-2], 1)
    a_cols = None if gv is None else steps(gv.to(dt).exp(), 1, V)
    if initial_state is None:
        S = torch.zeros(B * H, K, V, dtype=dt, device=q.device)
    else:
        S = initial_state.to(dt).reshape(B * H, K, V)
    outs = []
    for t in range(T):
        if a_rows is not None:
            S = S * a_rows[t]
        if a_cols is not None:
            S = S * a_cols[t]
        kt = k_s[t]
        u = b_s[t] * (v_s[t] - torch.bmm(kt, S))  # [BH, 1, V]
        S = torch.baddbmm(S, kt.transpose(1, 2), u)
        outs.append(torch.bmm(q_s[t], S))
    o = torch.cat(outs, dim=1) if T > 1 else outs[0]  # [BH, T, V]
    o = o.reshape(B, H, T, V).transpose(1, 2).to(q.dtype)
    return o, (S.reshape(B, H, K, V) if output_final_state else None)


def fused_recurrent_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None = None,
    gk: torch.Tensor | None = None,
    gv: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    use_gate_in_kernel: bool = False,
    A_log: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    use_beta_sigmoid_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
    state_v_first: bool = False,
    cu_seqlens: torch.LongTensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule as a step loop with a carried state (the decoding path).

    Per value head, ``S' = exp(g_t) diag(exp(gk_t)) S_{t-1} diag(exp(gv_t))`` (each gate optional),
    ``S_t = S' + beta_t k_t^T (v_t - k_t S')``, ``o_t = (scale q_t) S_t``. Positional order is
    fla 0.6's: **``beta`` comes after ``gk, gv``**, so pass it by keyword (or as the 7th argument).
    Unlike fla's (forward-only) kernel, this backpropagates into every input.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, HV, V]`` with ``HV`` a multiple of ``H`` (grouped value
            attention: value head ``j`` reads query/key head ``j // (HV // H)``; ``HV == H`` is the
            usual case).
        g: ``[B, T, HV]`` log decay (<= 0), or the raw gate input with ``use_gate_in_kernel``; None
            for no scalar decay.
        gk: ``[B, T, HV, K]`` per-key log decay (<= 0) or None.
        gv: ``[B, T, HV, V]`` per-value log decay (<= 0) or None.
        beta: ``[B, T, HV]`` delta step size, or logits with ``use_beta_sigmoid_in_kernel``; None
            means 1 (as in fla).
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, HV, K, V]`` state to start from (e.g. the last call's final state);
            ``[N, HV, V, K]`` with ``state_v_first``.
        output_final_state: return the final state (float32; float64 for float64 inputs).
        use_qk_l2norm_in_kernel: L2-normalise ``q`` and ``k`` over the last dim first.
        use_gate_in_kernel: ``g`` is the raw input and the decay is
            ``-exp(A_log) * softplus(g + dt_bias)`` (Mamba-2 / Gated DeltaNet), differentiable in
            ``g``, ``A_log`` and ``dt_bias``.
        A_log: ``[HV]``, required with ``use_gate_in_kernel`` (ignored without it, as in fla).
        dt_bias: ``[HV]`` or None, used with ``use_gate_in_kernel`` (ignored without it).
        use_beta_sigmoid_in_kernel: ``beta`` holds logits; the step size is ``sigmoid(beta)``.
        allow_neg_eigval: step size ``2 * sigmoid(beta)`` in ``(0, 2)``, so the transition
            ``I - beta k^T k`` may have negative eigenvalues; needs ``use_beta_sigmoid_in_kernel``.
        state_v_first: states in fla's value-first layout ``[N, HV, V, K]``, on input and output.
        cu_seqlens: ``[N + 1]`` offsets of packed sequences (requires ``B == 1``).

    Returns:
        ``(o: [B, T, HV, V] in q's dtype, final_state or None)``.

    Example:
        >>> o, state = fused_recurrent_gated_delta_rule(q, k, v, g, beta=beta, output_final_state=True)
        >>> o1, state = fused_recurrent_gated_delta_rule(q1, k1, v1, g1, beta=b1, initial_state=state,
        ...                                              output_final_state=True)  # one more token
    """
    return validate_and_run(
        recurrent_core,
        q,
        k,
        v,
        g,
        beta,
        scale,
        initial_state,
        output_final_state,
        use_qk_l2norm_in_kernel,
        cu_seqlens,
        batch_varlen=True,
        gk=gk,
        gv=gv,
        grouped=True,
        beta_default_one=True,
        use_gate_in_kernel=use_gate_in_kernel,
        A_log=A_log,
        dt_bias=dt_bias,
        use_beta_sigmoid_in_kernel=use_beta_sigmoid_in_kernel,
        allow_neg_eigval=allow_neg_eigval,
        state_v_first=state_v_first,
    )
