"""Observable Propagation (Dunefsky & Cohan, arXiv 2312.16291): feature vectors without data.

An *observable* is a linear functional ``n: [V]`` of the logits (e.g. the logit difference
"he" - "she"). Propagating it backwards through a computational path gives that path's feature
vector ``y: [D]`` in the residual stream, so that the path's contribution to ``n . logits`` is
``y . x`` for the residual ``x`` the path reads:

- unembedding: ``y_U = W_U^T n`` (the final norm's gain folded in, and LayerNorm's centering, as
  TransformerLens folds LN);
- attention head ``h`` of layer ``l`` (its OV circuit ``W_O^h W_V^h``, pattern held fixed):
  ``y = g_l * (W_V^h)^T (W_O^h)^T y_next`` with ``g_l`` the gain of the norm before the head;
- MLP: first-order linearisation, ``y = J(x)^T y_next`` averaged over points ``x``.

``norm="fold"`` folds the norms' gains and LayerNorm's centering (the paper: LayerNorm hardly changes feature *directions*
in high dimension); ``norm="none"`` ignores norms. The exact derivative through a norm at a point
(:func:`norm_vjp`) differs from the folded vector only by removing the component along the
normalised input (and the mean, for LayerNorm) and a scale, which is what the paper's theorem
bounds. The *coupling coefficient* ``C(y1, y2) = <y1, y2> / |y1|^2`` is the slope of ``y2 . x``
on ``y1 . x`` for isotropic ``x``.

Example:
    >>> n = logit_difference(256, positive=[ord("a")], negative=[ord("b")])
    >>> vecs = observable_feature_vectors(model, n)        # {"blocks.1.attn.head0": [D], ...}
    >>> coupling_coefficient(vecs["blocks.1.attn.head0"], vecs["blocks.1.attn.head1"])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from linearlab.analysis.hooks import logits_of, model_parts, run_with_hooks
from linearlab.papers import ANALYSIS, declare_paper

NORM_MODES = ("fold", "none")


def observable(vocab_size: int, weights: Mapping[int, float]) -> torch.Tensor:
    """The observable ``n: [V]`` with ``n[token] = weight`` (zero elsewhere).

    Raises ValueError for a token outside ``[0, vocab_size)``.
    """
    if not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size: expected an int >= 1, got {vocab_size!r}")
    if not weights:
        raise ValueError("weights: expected at least one {token: weight} entry, got none")
    n = torch.zeros(vocab_size, dtype=torch.float64)
    for token, w in weights.items():
        if not isinstance(token, int) or not 0 <= token < vocab_size:
            raise ValueError(f"observable: token {token!r} is outside the vocabulary [0, {vocab_size})")
        n[token] += float(w)
    return n


def logit_difference(vocab_size: int, positive: Iterable[int], negative: Iterable[int] = ()) -> torch.Tensor:
    """``n = mean of e_pos - mean of e_neg``: the (average) logit difference between two token sets."""
    pos, neg = list(positive), list(negative)
    if not pos:
        raise ValueError("positive: expected at least one token id, got none")
    weights: dict[int, float] = {}
    for token in pos:
        weights[token] = weights.get(token, 0.0) + 1.0 / len(pos)
    for token in neg:
        weights[token] = weights.get(token, 0.0) - 1.0 / len(neg)
    return observable(vocab_size, weights)


def _check_observable(model: nn.Module, n: torch.Tensor) -> torch.Tensor:
    vocab = model_parts(model).vocab_size
    if not isinstance(n, torch.Tensor) or n.shape != (vocab,):
        got = tuple(n.shape) if isinstance(n, torch.Tensor) else type(n).__name__
        raise ValueError(f"observable: expected a [V] = [{vocab}] vector over the vocabulary, got {got}")
    return n


def _fold(norm: nn.Module | None, y: torch.Tensor) -> torch.Tensor:
    """The data-free part of ``J_norm^T y``: times the gain, and for LayerNorm minus the mean
    (centering is linear; TransformerLens folds it into the weights the same way)."""
    weight = getattr(norm, "weight", None)
    if weight is not None:
        y = y * weight.detach().to(y.dtype)
    if isinstance(norm, nn.LayerNorm):
        y = y - y.mean()
    return y


def unembed_vector(model: nn.Module, n: torch.Tensor, norm: str = "fold") -> torch.Tensor:
    """``y_U = g_final * W_U^T n: [D]`` (centred for LayerNorm; ``norm="none"``: without the final norm)."""
    _check_mode(norm)
    parts = model_parts(model)
    y = parts.unembed.detach().double().T @ _check_observable(model, n).double()
    return _fold(parts.final_norm, y) if norm == "fold" else y


def _check_mode(norm: str) -> None:
    if norm not in NORM_MODES:
        raise ValueError(f"norm: expected one of {NORM_MODES}, got {norm!r}")


def ov_circuit(model: nn.Module, layer: int, head: int) -> torch.Tensor:
    """``W_O^h W_V^h: [D, D]``: what head ``head`` of ``layer`` adds to the residual per unit of
    attention on a source whose (normed) input is ``x`` (``out = OV @ x``; biases left out).

    Works for MixerLM softmax-attention layers and Llama-family attention (grouped-query heads
    share their key/value head).
    """
    parts = model_parts(model)
    if not 0 <= layer < parts.n_layers:
        raise ValueError(f"layer: expected 0 <= layer < {parts.n_layers}, got {layer}")
    heads = parts.attention_heads(layer)
    if heads is None:
        raise ValueError(
            f"layer {layer}: its mixer {type(parts.mixer(layer)).__name__} is not softmax attention with an "
            "OV circuit (qkv_proj/o_proj heads)"
        )
    num_heads, num_kv, dh = heads
    if not 0 <= head < num_heads:
        raise ValueError(f"head: expected 0 <= head < {num_heads}, got {head}")
    mixer = parts.mixer(layer)
    if parts.kind == "mixerlm":
        d = mixer.d_model
        w_v = mixer.qkv_proj.weight.detach()[2 * d :]
    else:
        w_v = mixer.v_proj.weight.detach()
    kv = head // (num_heads // num_kv)
    w_v_h = w_v[kv * dh : (kv + 1) * dh].double()  # [Dh, D]
    w_o_h = mixer.o_proj.weight.detach()[:, head * dh : (head + 1) * dh].double()  # [D, Dh]
    return w_o_h @ w_v_h


def norm_vjp(norm: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The exact derivative through a norm at ``x``: ``J_norm(x)^T y``. ``x: [..., D], y: [D] -> [..., D]``."""
    x = x.detach().double().requires_grad_(True)
    module = _double(norm)
    out = module(x)
    (grad,) = torch.autograd.grad(out, x, y.double().expand_as(out))
    return grad


def _double(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module).double()


def _component(name: str) -> tuple[int, str, int | None]:
    # "blocks.{l}.attn.head{h}" or "blocks.{l}.mlp"
    bits = name.split(".")
    try:
        if len(bits) == 4 and bits[0] == "blocks" and bits[2] == "attn" and bits[3].startswith("head"):
            return int(bits[1]), "attn", int(bits[3][4:])
        if len(bits) == 3 and bits[0] == "blocks" and bits[2] == "mlp":
            return int(bits[1]), "mlp", None
    except ValueError:
        pass
    raise ValueError(f"path: component {name!r} is not 'blocks.<l>.attn.head<h>' or 'blocks.<l>.mlp'")


def feature_vector(
    model: nn.Module,
    n: torch.Tensor,
    path: Sequence[str] = (),
    norm: str = "fold",
    mlp_points: Mapping[int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The feature vector ``[D]`` of ``n`` through ``path`` (components from earliest to latest
    layer, each ``"blocks.<l>.attn.head<h>"`` or ``"blocks.<l>.mlp"``), in the residual stream that
    the path's first component reads (before its norm). ``path=()`` is the direct unembedding path.

    ``mlp_points[l]: [N, D]`` are residual-stream points (``blocks.<l>.hook_resid_pre +
    hook_attn_out``) at which an MLP is linearised; the vector is the mean ``J(x)^T y`` over them.
    """
    _check_mode(norm)
    parts = model_parts(model)
    y = unembed_vector(model, n, norm)
    last = parts.n_layers
    for name in reversed(list(path)):
        layer, kind, head = _component(name)
        if not 0 <= layer < last:
            raise ValueError(
                f"path: component {name!r} must come from a layer below {last} (earliest first, one per layer)"
            )
        last = layer
        if kind == "attn":
            y = ov_circuit(model, layer, head).T @ y
            if norm == "fold":
                y = _fold(parts.mixer_norm(layer), y)
        else:
            mlp = parts.mlp(layer)
            if mlp is None:
                raise ValueError(f"path: layer {layer} has no MLP")
            pts = (mlp_points or {}).get(layer)
            if not isinstance(pts, torch.Tensor) or pts.dim() != 2 or pts.shape[1] != parts.d_model:
                raise ValueError(
                    f"mlp_points[{layer}]: an MLP is linearised at points; expected an [N, {parts.d_model}] "
                    f"tensor, got {getattr(pts, 'shape', pts)!r}"
                )
            sub = nn.Sequential(_double(parts.mlp_norm(layer)), _double(mlp))
            x = pts.detach().double().requires_grad_(True)
            out = sub(x)
            (grad,) = torch.autograd.grad(out, x, y.expand_as(out))
            y = grad.mean(0)
    return y


def observable_feature_vectors(
    model: nn.Module,
    n: torch.Tensor,
    norm: str = "fold",
    mlp_points: Mapping[int, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Direct-path feature vectors of ``n`` for every attention head (and every MLP with points in
    ``mlp_points``): ``{"blocks.<l>.attn.head<h>": [D], "blocks.<l>.mlp": [D]}``, float64."""
    parts = model_parts(model)
    out: dict[str, torch.Tensor] = {}
    for layer in range(parts.n_layers):
        heads = parts.attention_heads(layer)
        for h in range(heads[0] if heads else 0):
            name = f"blocks.{layer}.attn.head{h}"
            out[name] = feature_vector(model, n, [name], norm)
        if mlp_points is not None and layer in mlp_points:
            name = f"blocks.{layer}.mlp"
            out[name] = feature_vector(model, n, [name], norm, mlp_points)
    return out


def coupling_coefficient(y1: torch.Tensor, y2: torch.Tensor) -> float:
    """``C(y1, y2) = <y1, y2> / |y1|^2``: expected ``y2 . x`` per unit of ``y1 . x`` for isotropic ``x``."""
    if y1.shape != y2.shape or y1.dim() != 1:
        raise ValueError(f"y1, y2: expected two [D] vectors, got {tuple(y1.shape)} and {tuple(y2.shape)}")
    denom = float(y1.double() @ y1.double())
    if denom == 0:
        raise ValueError("y1: the zero vector has no coupling coefficient")
    return float(y1.double() @ y2.double()) / denom


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two flattened tensors (float64)."""
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-300))


def frozen_pattern_gradient(
    model: nn.Module,
    input_ids: torch.Tensor,
    n: torch.Tensor,
    layer: int,
    head: int,
    position: int = -1,
) -> torch.Tensor:
    """Autograd ground truth for a head's direct-path feature vector: ``[B, T, D]``.

    The gradient of ``sum_b n . logits[b, position]`` with respect to the residual stream entering
    ``layer`` (``blocks.<layer>.hook_resid_pre``) *as read by head* ``head`` only, with every
    attention pattern frozen (queries and keys detached), the other heads of ``layer`` and every
    later block's outputs stop-gradient, and the residual's skip path cut. The forward pass is
    unchanged. Without norms, row ``[b, s]`` equals ``A[b, position, s] * feature_vector(...)``
    exactly; with norms it is the vector with each norm's exact Jacobian at the actual activations.
    """
    parts = model_parts(model)
    _check_observable(model, n)
    ov_circuit(model, layer, head)  # validates layer/head
    leaf: dict[str, torch.Tensor] = {}
    norm = parts.mixer_norm(layer)

    def take_resid(x: torch.Tensor, _name: str) -> None:
        leaf["x"] = x.detach().requires_grad_(True)

    def reread(_act: torch.Tensor, _name: str) -> torch.Tensor:
        # forward() directly: calling the module would re-enter this very hook
        return norm.forward(leaf["x"])

    def one_head(z: torch.Tensor, _name: str) -> torch.Tensor:
        mask = torch.zeros(z.shape[-2], 1, dtype=torch.bool, device=z.device)
        mask[head] = True
        return torch.where(mask, z, z.detach())

    detach = lambda a, _n: a.detach()  # noqa: E731
    fwd = [
        (f"blocks.{layer}.hook_resid_pre", take_resid),
        (f"blocks.{layer}.ln1.hook_normalized", reread),
        (f"blocks.{layer}.attn.hook_z", one_head),
    ]
    for i in range(parts.n_layers):
        if parts.attention_heads(i) is not None:
            fwd += [(f"blocks.{i}.attn.hook_q", detach), (f"blocks.{i}.attn.hook_k", detach)]
        later = [f"blocks.{i}.hook_attn_out"] if i > layer else []
        if parts.mlp(i) is not None and i >= layer:
            later.append(f"blocks.{i}.hook_mlp_out")
        fwd += [(name, detach) for name in later]
    with torch.enable_grad():
        logits = logits_of(run_with_hooks(model, input_ids, fwd))
        value = (logits[:, position].double() @ n.double().to(logits.device)).sum()
        (grad,) = torch.autograd.grad(value, leaf["x"])
    return grad


def strip_norms_(model: nn.Module) -> nn.Module:
    """Replace every norm of a MixerLM (or LinearLabForCausalLM) by ``nn.Identity``, in place.

    The norm-free model is where Observable Propagation is exact (cosine 1 with the gradient).
    """
    parts = model_parts(model)
    if parts.kind != "mixerlm":
        raise ValueError(f"model: strip_norms_ supports MixerLM models, got {type(model).__name__}")
    lm = model if hasattr(model, "blocks") else model.model
    for block in lm.blocks:
        block.mixer_norm = nn.Identity()
        if block.mlp_norm is not None:
            block.mlp_norm = nn.Identity()
    lm.norm = nn.Identity()
    return model


declare_paper(
    arxiv="2312.16291",
    short="Observable Propagation",
    title="Observable Propagation: A Data-Efficient Approach to Uncover Feature Vectors in Transformers",
    authors="Dunefsky, Cohan",
    area=ANALYSIS,
    status="implemented",
    objects=(
        "linearlab.analysis.observable_propagation.observable_feature_vectors",
        "linearlab.analysis.observable_propagation.feature_vector",
        "linearlab.analysis.observable_propagation.coupling_coefficient",
        "linearlab.analysis.observable_propagation.frozen_pattern_gradient",
        "linearlab.analysis.hooks.run_with_cache",
    ),
    recipes=("obs-prop",),
    usage=(
        "from linearlab.analysis.observable_propagation import logit_difference, observable_feature_vectors\n"
        "vecs = observable_feature_vectors(model, logit_difference(256, [ord('a')], [ord('b')]))  # name -> [D]"
    ),
    claim=(
        "Propagating a linear functional of the logits backwards gives a path's feature vector with no "
        "data (head: W_V^T W_O^T W_U^T n; MLPs linearised); LayerNorm hardly changes feature directions "
        "in high dimension; the coupling coefficient <y1,y2>/|y1|^2 predicts how two observables co-move."
    ),
)
