"""How a language model uses its depth (Csordás, Manning, Potts, arXiv 2505.13898).

Through the named hooks of :mod:`linearlab.analysis.hooks`, on any MixerLM or Llama-family model:

- :func:`layer_contributions`: per layer ``l``, the relative contribution ``|a_l + m_l| / |h_l|``
  of its attention and MLP outputs to the residual ``h_l`` entering it, and ``cos(a_l + m_l, h_l)``
  (negative = the layer erases part of the residual), averaged over tokens;
- :func:`skip_effects`: skip layer ``s`` (its attention and MLP outputs zeroed) and measure, for
  every later layer ``l``, the relative change of its contribution ``|d'_l - d_l| / |d_l|``, and
  the KL divergence of the output distribution from the unskipped one;
- :func:`depth_alignment`: held-out R^2 of ridge maps from each layer of a shallow model's residual
  stream to each layer of a deeper one's (the paper finds the best map at equal relative depth).

Example:
    >>> contrib = layer_contributions(model, ids)       # {"relative": [L], "cos": [L]}
    >>> effects = skip_effects(model, ids)              # {"future": [L, L], "kl": [L]}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from linearlab.analysis.hooks import logits_of, model_parts, run_with_cache, run_with_hooks
from linearlab.analysis.probes import LinearProbe
from linearlab.papers import ANALYSIS, declare_paper


def _deltas(model: torch.nn.Module, input_ids: torch.Tensor, fwd_hooks=()) -> tuple[list, list, torch.Tensor]:
    """Per layer: residual entering it ``[B, T, D]`` and its total contribution; and the logits."""
    n = model_parts(model).n_layers
    names = [f"blocks.{i}.hook_resid_pre" for i in range(n)] + [
        f"blocks.{i}.hook_resid_post" for i in range(n)
    ]
    cache: dict[str, torch.Tensor] = {}

    def keep(act: torch.Tensor, name: str) -> None:
        cache[name] = act.detach().double()

    with torch.no_grad():
        out = run_with_hooks(model, input_ids, [*fwd_hooks, *[(nm, keep) for nm in names]])
    pre = [cache[f"blocks.{i}.hook_resid_pre"] for i in range(n)]
    delta = [cache[f"blocks.{i}.hook_resid_post"] - pre[i] for i in range(n)]
    return pre, delta, logits_of(out).double()


def layer_contributions(model: torch.nn.Module, input_ids: torch.Tensor) -> dict[str, list[float]]:
    """``{"relative": [L], "cos": [L]}``: token-averaged ``|d_l| / |h_l|`` and ``cos(d_l, h_l)``."""
    pre, delta, _ = _deltas(model, input_ids)
    rel = [float((d.norm(dim=-1) / h.norm(dim=-1).clamp_min(1e-12)).mean()) for h, d in zip(pre, delta)]
    cos = [float(F.cosine_similarity(d, h, dim=-1).mean()) for h, d in zip(pre, delta)]
    return {"relative": rel, "cos": cos}


def skip_effects(model: torch.nn.Module, input_ids: torch.Tensor) -> dict[str, list]:
    """Skip each layer in turn.

    Returns ``{"future": [L][L], "max_future": [L], "kl": [L]}``: ``future[s][l]`` is the mean over
    tokens of ``|d'_l - d_l| / |d_l|`` for ``l > s`` (0 on and below the diagonal), ``max_future[s]``
    its maximum over ``l``, and ``kl[s]`` the mean ``KL(p || p_skip)`` of the next-token
    distributions (nats).
    """
    n = model_parts(model).n_layers
    _, delta, logits = _deltas(model, input_ids)
    logp = F.log_softmax(logits, dim=-1)
    zero = lambda a, _n: torch.zeros_like(a)  # noqa: E731
    future, kl = [], []
    for s in range(n):
        hooks = [(f"blocks.{s}.hook_attn_out", zero)]
        if f"blocks.{s}.hook_mlp_out" in _names(model):
            hooks.append((f"blocks.{s}.hook_mlp_out", zero))
        _, delta_s, logits_s = _deltas(model, input_ids, hooks)
        row = [0.0] * n
        for l in range(s + 1, n):
            change = (delta_s[l] - delta[l]).norm(dim=-1) / delta[l].norm(dim=-1).clamp_min(1e-12)
            row[l] = float(change.mean())
        future.append(row)
        logq = F.log_softmax(logits_s, dim=-1)
        kl.append(float((logp.exp() * (logp - logq)).sum(-1).mean()))
    return {"future": future, "max_future": [max(r) for r in future], "kl": kl}


def _names(model: torch.nn.Module) -> set[str]:
    from linearlab.analysis.hooks import hook_names

    return set(hook_names(model))


def residual_streams(model: torch.nn.Module, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """The residual stream after every block, ``[N, D]`` each (tokens flattened), float64."""
    n = model_parts(model).n_layers
    names = [f"blocks.{i}.hook_resid_post" for i in range(n)]
    with torch.no_grad():
        _, cache = run_with_cache(model, input_ids, names=names)
    return [cache[nm].flatten(0, -2).double() for nm in names]


def depth_alignment(
    shallow: Sequence[torch.Tensor],
    deep: Sequence[torch.Tensor],
    lam: float = 1e-3,
    train_fraction: float = 0.8,
    seed: int = 0,
) -> torch.Tensor:
    """``[L_shallow, L_deep]`` held-out R^2 (uniform over output dims) of ridge maps shallow i -> deep j.

    ``shallow[i]: [N, D1]`` and ``deep[j]: [N, D2]`` must hold the same N tokens in the same order.
    """
    if not shallow or not deep:
        raise ValueError("shallow, deep: expected non-empty lists of [N, D] residual streams")
    n = shallow[0].shape[0]
    for name, seq in (("shallow", shallow), ("deep", deep)):
        for i, h in enumerate(seq):
            if h.dim() != 2 or h.shape[0] != n:
                raise ValueError(f"{name}[{i}]: expected [N, D] with N = {n} tokens, got {tuple(h.shape)}")
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction: expected a value in (0, 1), got {train_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = int(round(train_fraction * n))
    tr, te = perm[:cut], perm[cut:]
    out = torch.zeros(len(shallow), len(deep), dtype=torch.float64)
    for i, x in enumerate(shallow):
        for j, y in enumerate(deep):
            out[i, j] = LinearProbe.fit(x[tr], y[tr], lam).score(x[te], y[te])
    return out


declare_paper(
    arxiv="2505.13898",
    short="Depth efficiency",
    title="Do Language Models Use Their Depth Efficiently?",
    authors="Csordás, Manning, Potts",
    venue="NeurIPS 2025",
    area=ANALYSIS,
    status="partial",
    objects=(
        "linearlab.analysis.depth_usage.layer_contributions",
        "linearlab.analysis.depth_usage.skip_effects",
        "linearlab.analysis.depth_usage.depth_alignment",
    ),
    recipes=("depth-use",),
    usage=(
        "from linearlab.analysis.depth_usage import layer_contributions, skip_effects\n"
        "contrib = layer_contributions(model, torch.randint(0, 256, (2, 16))); kl = skip_effects(model, torch.randint(0, 256, (2, 16)))['kl']"
    ),
    claim=(
        "In Llama 3.1, Qwen 3 and OLMo 2 second-half layers contribute much less to the residual and "
        "skipping them barely changes later layers or outputs; linear maps from a shallow model's "
        "residual to a deeper one's align at equal relative depth (abstract)."
    ),
    note="The multi-hop analysis (no extra depth used for more hops) is not implemented.",
)
