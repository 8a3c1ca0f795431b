"""Input validation and dispatch shared by every delta-rule form (naive, chunk, recurrent).

The delta rule is the gated delta rule with ``g = 0``; both families go through
:func:`validate_and_run`, which checks the inputs once, applies fla's in-kernel options (L2 norm of
``q, k``, the Mamba-2 gate from raw inputs, ``beta`` from logits, the state layout, grouped value
heads) as plain differentiable torch ops, and routes packed variable-length batches
(``cu_seqlens``) through :func:`linearlab.ops.utils.run_varlen`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from linearlab.ops.utils import (
    _shape,
    check_chunk_indices,
    check_cu_seqlens,
    check_cu_seqlens_cpu,
    check_flag,
    check_initial_state,
    check_log_gate,
    check_per_token,
    check_qkv_grouped,
    check_scale,
    l2norm,
    run_varlen,
    state_dtype,
    state_from_v_first,
    state_to_v_first,
)

Core = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


def _check_float(name: str, t: torch.Tensor | None) -> None:
    if t is not None and isinstance(t, torch.Tensor) and not t.dtype.is_floating_point:
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")


def gdn_gate(
    g: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """Gated DeltaNet's (Mamba-2's) log decay from raw inputs: ``-exp(A_log) * softplus(g + dt_bias)``.

    ``g: [B, T, HV]`` raw, ``A_log, dt_bias: [HV]``; the result is ``<= 0``, in ``dtype`` (the
    state dtype: a bfloat16 gate would lose the small decays the ops accumulate). Plain torch ops,
    so gradients reach ``g``, ``A_log`` and ``dt_bias``. ``softplus`` returns its input above 20,
    as fla's kernels do.
    """
    x = g.to(dtype)
    if dt_bias is not None:
        x = x + dt_bias.to(dtype)
    return -A_log.to(dtype).exp() * F.softplus(x)


def _check_gate_inputs(
    g: torch.Tensor | None,
    A_log: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    shape: tuple[int, int, int],
    ref: torch.Tensor,
) -> None:
    """``use_gate_in_kernel=True``: ``g`` is the raw (any sign) gate input, ``A_log`` is needed."""
    HV = shape[-1]
    if g is None:
        raise ValueError(
            f"g: use_gate_in_kernel=True computes the decay from the raw gate input g {list(shape)}, got None"
        )
    if A_log is None:
        raise ValueError(f"A_log: required with use_gate_in_kernel=True (shape [HV] = [{HV}]), got None")
    for name, t in (("g", g), ("A_log", A_log), ("dt_bias", dt_bias)):
        _check_float(name, t)
    check_per_token("g", g, shape, ref)
    check_per_token("A_log", A_log, (HV,), ref)
    check_per_token("dt_bias", dt_bias, (HV,), ref)


def validate_and_run(
    core: Core,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    beta: torch.Tensor | None,
    scale: float | None,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    use_qk_l2norm_in_kernel: bool,
    cu_seqlens: torch.Tensor | None,
    batch_varlen: bool = False,
    *,
    gk: torch.Tensor | None = None,
    gv: torch.Tensor | None = None,
    grouped: bool = False,
    native_groups: bool = False,
    beta_default_one: bool = False,
    use_gate_in_kernel: bool = False,
    A_log: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    use_beta_sigmoid_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
    state_v_first: bool = False,
    cu_seqlens_cpu: torch.Tensor | None = None,
    chunk_indices: torch.Tensor | None = None,
    chunk_size: int | None = None,
    cp_context: object = None,
    **core_kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate ``(q, k, v, g, beta, ...)`` and call ``core`` on each (packed) sequence.

    ``core(q=, k=, v=, g=, beta=, initial_state=, output_final_state=, scale=, **core_kwargs)``
    receives checked tensors for one fixed-length batch, the state in the ``[N, HV, K, V]`` layout,
    ``g`` already a log decay and ``beta`` already a step size, and returns ``(o, final_state)``.
    ``g`` is None for the (ungated) delta rule; ``gk``/``gv`` (per-key / per-value log decays,
    recurrent and naive forms only) reach ``core`` only when given.

    ``grouped`` allows ``v: [B, T, HV, V]`` with ``HV`` a multiple of ``q``'s heads ``H`` (fla's GVA;
    ``g``, ``beta``, ``gk``, ``gv`` and the state then have ``HV`` heads): ``q`` and ``k`` are
    repeated to ``HV`` heads for ``core`` (autograd sums their gradients over each group), unless
    ``native_groups`` says ``core`` reads value head ``j``'s query/key from head ``j // (HV // H)``
    itself. ``beta_default_one``: ``beta=None`` means a step size of 1 (fla's recurrent forms).
    ``chunk_size`` (chunk forms) is passed on to ``core``, and ``chunk_indices`` checked against
    ``cu_seqlens`` for it. With ``cu_seqlens``, ``batch_varlen=True`` runs the packed sequences as
    one padded batch (:func:`run_varlen_batched`); otherwise one by one.
    """
    B, T, H, HV, K, V = check_qkv_grouped(q, k, v, grouped=grouped)
    use_qk_l2norm_in_kernel = check_flag("use_qk_l2norm_in_kernel", use_qk_l2norm_in_kernel)
    use_gate_in_kernel = check_flag("use_gate_in_kernel", use_gate_in_kernel)
    use_beta_sigmoid_in_kernel = check_flag("use_beta_sigmoid_in_kernel", use_beta_sigmoid_in_kernel)
    allow_neg_eigval = check_flag("allow_neg_eigval", allow_neg_eigval)
    state_v_first = check_flag("state_v_first", state_v_first)
    if cp_context is not None:
        raise ValueError(
            "cp_context: fla's context parallelism (one sequence split across devices) is not "
            f"available here, where every sequence runs whole on one device; got {type(cp_context).__name__}, "
            "pass None (or cu_seqlens for packed sequences)"
        )
    if allow_neg_eigval and not use_beta_sigmoid_in_kernel:
        raise ValueError(
            "allow_neg_eigval: True requires use_beta_sigmoid_in_kernel=True (as in fla: it makes the "
            "in-kernel sigmoid 2 * sigmoid(beta)); with beta given as a step size, pass 2 * beta instead"
        )
    if isinstance(gk, torch.Tensor) and gk.dim() == 3 and beta is None:
        raise ValueError(
            f"gk: expected shape [B, T, HV, K] = {[B, T, HV, K]}, got {_shape(gk)}, the shape of beta, "
            "and no beta: fla's fused_recurrent_gated_delta_rule takes (q, k, v, g, gk, gv, beta, ...), "
            "so pass beta by keyword"
        )
    if beta is None:
        if not beta_default_one:
            raise ValueError(
                f"beta: the delta rule needs a per-token step size [B, T, HV] = {[B, T, HV]}, got None"
            )
        beta = q.new_ones(B, T, HV)
    for name, t in (("beta", beta), ("g", g), ("gk", gk), ("gv", gv)):
        _check_float(name, t)
    check_per_token("beta", beta, (B, T, HV), q)
    if use_gate_in_kernel:
        _check_gate_inputs(g, A_log, dt_bias, (B, T, HV), q)
    else:  # fla ignores A_log and dt_bias without use_gate_in_kernel; so does this
        check_log_gate("g", g, (B, T, HV), q)
    check_log_gate("gk", gk, (B, T, HV, K), q)
    check_log_gate("gv", gv, (B, T, HV, V), q)
    scale = check_scale(scale, K)
    N = check_cu_seqlens(cu_seqlens, B, T)
    check_cu_seqlens_cpu(cu_seqlens_cpu, cu_seqlens)
    if chunk_size is not None:  # the chunk form: checks chunk_indices, and core gets the size
        check_chunk_indices(chunk_indices, cu_seqlens, chunk_size)
        core_kwargs["chunk_size"] = chunk_size
    elif chunk_indices is not None:
        raise ValueError("chunk_indices: only the chunk form takes it")
    check_initial_state(initial_state, N, HV, K, V, q, v_first=state_v_first)
    if initial_state is not None:
        _check_float("initial_state", initial_state)

    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    if use_gate_in_kernel:
        g = gdn_gate(g, A_log, dt_bias, state_dtype(q))
    if use_beta_sigmoid_in_kernel:
        beta = torch.sigmoid(beta.to(state_dtype(q)))
        if allow_neg_eigval:
            beta = 2.0 * beta
    if HV != H and not native_groups:
        q, k = q.repeat_interleave(HV // H, dim=2), k.repeat_interleave(HV // H, dim=2)
    h0 = state_from_v_first(initial_state, state_v_first)
    gates = {name: t for name, t in (("gk", gk), ("gv", gv)) if t is not None}
    if cu_seqlens is None:
        o, ht = core(
            q=q,
            k=k,
            v=v,
            g=g,
            beta=beta,
            **gates,
            initial_state=h0,
            output_final_state=output_final_state,
            scale=scale,
            **core_kwargs,
        )
    else:
        per_token = {"q": q, "k": k, "v": v, "g": g, "beta": beta, **gates}
        run = run_varlen_batched if batch_varlen else run_varlen
        o, ht = run(core, per_token, cu_seqlens, h0, output_final_state, scale=scale, **core_kwargs)
    return o, state_to_v_first(ht, state_v_first)


def run_varlen_batched(
    core: Core,
    per_token: dict[str, torch.Tensor | None],
    cu_seqlens: torch.Tensor,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run packed sequences as one zero-padded batch ``[N, T_max, ...]`` instead of one by one.

    Exact for the delta rules: a padded step has ``k = 0, beta = 0, g = 0``, so it neither writes
    nor decays the state, and each row's final state is the one after its last real token. Falls
    back to the per-sequence loop when padding would more than double the work (very uneven
    lengths). Autograd flows through the scatter/gather.
    """
    cu = cu_seqlens.tolist()
    lengths = [e - s for s, e in zip(cu[:-1], cu[1:])]
    N, T, T_max = len(lengths), cu[-1], max(lengths)
    if N == 1 or N * T_max > 2 * T:
        return run_varlen(core, per_token, cu_seqlens, initial_state, output_final_state, **kwargs)
    device = per_token["q"].device
    # Row-major position of each packed token inside the padded [N * T_max] grid.
    pos = torch.cat([torch.arange(n * T_max, n * T_max + L, device=device) for n, L in enumerate(lengths)])

    def pad(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None:
            return None
        flat = x[0]  # [T, ...]
        grid = flat.new_zeros((N * T_max, *flat.shape[1:])).index_copy(0, pos, flat)
        return grid.reshape(N, T_max, *flat.shape[1:])

    padded = {name: pad(t) for name, t in per_token.items()}
    o, ht = core(**padded, initial_state=initial_state, output_final_state=True, **kwargs)
    o = o.reshape(N * T_max, *o.shape[2:]).index_select(0, pos).unsqueeze(0)
    return o, (ht if output_final_state else None)
