"""Capture and patch activations of ``MixerLM`` and Hugging Face Llama-family models by name.

One hook system over plain ``torch`` forward hooks, with TransformerLens' names (no
TransformerLens model needed), for:

- :class:`~linearlab.models.MixerLM` and :class:`~linearlab.models.hf.LinearLabForCausalLM`;
- Hugging Face decoder LMs laid out like Llama (``model.layers[i]`` with ``self_attn``, ``mlp``,
  ``input_layernorm``, ``post_attention_layernorm``): Llama, Mistral, Qwen2, ...

Names (``i`` = layer; shapes ``[B, T, D]`` unless given)::

    hook_embed                       token embeddings
    blocks.{i}.hook_resid_pre        residual stream entering block i
    blocks.{i}.ln1.hook_normalized   the norm's output that the token mixer reads
    blocks.{i}.attn.hook_q/_k/_v     per-head projections [B, T, H, Dh] (before RoPE; softmax
                                     attention layers only)
    blocks.{i}.attn.hook_z           per-head outputs before the output projection [B, T, H, Dh]
    blocks.{i}.hook_attn_out         token-mixer output added to the residual
    blocks.{i}.ln2.hook_normalized   the norm's output that the MLP reads
    blocks.{i}.hook_mlp_out          MLP output added to the residual
    blocks.{i}.hook_resid_post       residual stream leaving block i
    ln_final.hook_normalized         final norm's output (what the unembedding reads)

A hook is ``fn(activation, name) -> new activation or None`` (None keeps it), as in
TransformerLens' ``run_with_hooks``. Zeroing ``hook_attn_out`` and ``hook_mlp_out`` of a block
skips that block; returning ``act.detach()`` from ``hook_q`` and ``hook_k`` freezes the attention
patterns for gradients.

Example:
    >>> logits, cache = run_with_cache(model, ids, names=["blocks.0.hook_resid_post"])
    >>> out = run_with_hooks(model, ids, [("blocks.1.hook_mlp_out", lambda a, n: torch.zeros_like(a))])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

HookFn = Callable[[torch.Tensor, str], "torch.Tensor | None"]


@dataclass(frozen=True)
class ModelParts:
    """The pieces of a pre-norm decoder LM that analyses need, whatever the model class.

    Attributes:
        embed: the token embedding module (``weight: [V, D]``).
        layers: the residual blocks, in order.
        final_norm: the norm before the unembedding.
        unembed: ``W_U: [V, D]`` (logits = ``final_norm(h) @ W_U.T`` (+ bias)).
        kind: ``"mixerlm"`` or ``"llama"``.
    """

    embed: nn.Module
    layers: Sequence[nn.Module]
    final_norm: nn.Module
    unembed: torch.Tensor
    kind: str

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def d_model(self) -> int:
        return int(self.unembed.shape[1])

    @property
    def vocab_size(self) -> int:
        return int(self.unembed.shape[0])

    def mixer(self, i: int) -> nn.Module:
        """Layer ``i``'s token mixer (MixerLM ``mixer``, Llama ``self_attn``)."""
        return self.layers[i].mixer if self.kind == "mixerlm" else self.layers[i].self_attn

    def mixer_norm(self, i: int) -> nn.Module:
        return self.layers[i].mixer_norm if self.kind == "mixerlm" else self.layers[i].input_layernorm

    def mlp(self, i: int) -> nn.Module | None:
        return self.layers[i].mlp

    def mlp_norm(self, i: int) -> nn.Module | None:
        return self.layers[i].mlp_norm if self.kind == "mixerlm" else self.layers[i].post_attention_layernorm

    def attention_heads(self, i: int) -> tuple[int, int, int] | None:
        """``(num_heads, num_kv_heads, head_dim)`` of layer ``i``'s softmax attention, or None."""
        m = self.mixer(i)
        if self.kind == "llama":
            cfg = m.config
            heads = cfg.num_attention_heads
            return heads, getattr(cfg, "num_key_value_heads", None) or heads, m.head_dim
        if hasattr(m, "qkv_proj") and hasattr(m, "o_proj") and hasattr(m, "rotary"):
            return m.num_heads, m.num_heads, m.head_dim
        return None


def model_parts(model: nn.Module) -> ModelParts:
    """Find embedding, blocks, final norm and unembedding of ``model``; ValueError for other models."""
    from linearlab.models.lm import MixerLM

    inner = getattr(model, "model", None)
    if isinstance(model, MixerLM) or isinstance(inner, MixerLM):
        lm = model if isinstance(model, MixerLM) else inner
        head = lm.embed.weight if lm.lm_head is None else lm.lm_head.weight
        return ModelParts(lm.embed, list(lm.blocks), lm.norm, head, "mixerlm")
    layers = getattr(inner, "layers", None)
    if isinstance(layers, nn.ModuleList) and len(layers) and _llama_like(layers[0]):
        head = model.get_output_embeddings()
        return ModelParts(inner.embed_tokens, list(layers), inner.norm, head.weight, "llama")
    raise ValueError(
        f"model: expected a MixerLM, LinearLabForCausalLM or a Llama-family *ForCausalLM (model.layers[i] "
        f"with self_attn, mlp, input_layernorm, post_attention_layernorm), got {type(model).__name__}"
    )


def _llama_like(layer: nn.Module) -> bool:
    return all(hasattr(layer, a) for a in ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm"))


# -- hook points -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Point:
    """Where a named activation lives: a module's input (``pre``) or output, and how to read/write it."""

    module: nn.Module
    pre: bool
    get: Callable[[Any], torch.Tensor]
    put: Callable[[Any, torch.Tensor], Any]


def _first(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, (tuple, list)) else value


def _with_first(value: Any, new: torch.Tensor) -> Any:
    if isinstance(value, tuple):
        return (new, *value[1:])
    if isinstance(value, list):
        return [new, *value[1:]]
    return new


def _heads_view(num_heads: int) -> tuple[Callable, Callable]:
    # [B, T, H*Dh] <-> [B, T, H, Dh]
    def get(value: Any) -> torch.Tensor:
        t = _first(value)
        return t.unflatten(-1, (num_heads, -1))

    def put(value: Any, new: torch.Tensor) -> Any:
        return _with_first(value, new.flatten(-2))

    return get, put


def _slice_view(part: int, num_heads: int) -> tuple[Callable, Callable]:
    # one third of a fused [B, T, 3*D] qkv projection, as heads
    def get(value: torch.Tensor) -> torch.Tensor:
        return value.chunk(3, dim=-1)[part].unflatten(-1, (num_heads, -1))

    def put(value: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        parts = list(value.chunk(3, dim=-1))
        parts[part] = new.flatten(-2)
        return torch.cat(parts, dim=-1)

    return get, put


def _points(model: nn.Module) -> dict[str, _Point]:
    parts = model_parts(model)
    out = lambda m: _Point(m, False, _first, _with_first)  # noqa: E731
    inp = lambda m: _Point(m, True, _first, _with_first)  # noqa: E731
    points: dict[str, _Point] = {"hook_embed": out(parts.embed)}
    for i, layer in enumerate(parts.layers):
        p = f"blocks.{i}."
        mixer = parts.mixer(i)
        points[p + "hook_resid_pre"] = inp(layer)
        points[p + "ln1.hook_normalized"] = out(parts.mixer_norm(i))
        heads = parts.attention_heads(i)
        if heads is not None:
            h, kv, _ = heads
            if parts.kind == "mixerlm":
                for j, name in enumerate("qkv"):
                    get, put = _slice_view(j, h)
                    points[p + f"attn.hook_{name}"] = _Point(mixer.qkv_proj, False, get, put)
            else:
                for name, n in (("q", h), ("k", kv), ("v", kv)):
                    get, put = _heads_view(n)
                    points[p + f"attn.hook_{name}"] = _Point(getattr(mixer, f"{name}_proj"), False, get, put)
            get, put = _heads_view(h)
            points[p + "attn.hook_z"] = _Point(mixer.o_proj, True, get, put)
        points[p + "hook_attn_out"] = out(mixer)
        if parts.mlp(i) is not None:
            points[p + "ln2.hook_normalized"] = out(parts.mlp_norm(i))
            points[p + "hook_mlp_out"] = out(parts.mlp(i))
        points[p + "hook_resid_post"] = out(layer)
    points["ln_final.hook_normalized"] = out(parts.final_norm)
    return points


def hook_names(model: nn.Module) -> list[str]:
    """Every hook name ``model`` offers, in forward order (see the module docstring)."""
    return list(_points(model))


def _resolve(model: nn.Module, names: Sequence[str]) -> dict[str, _Point]:
    points = _points(model)
    for name in names:
        if name not in points:
            raise ValueError(
                f"hook name {name!r} does not exist in this {type(model).__name__}; valid names: "
                + ", ".join(points)
            )
    return points


@contextmanager
def hooks(model: nn.Module, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
    """Attach ``(name, fn)`` hooks for the duration of a ``with`` block (removed even on error).

    ``fn(act, name)`` sees the activation in the documented layout and may return a replacement of
    the same shape (a patch) or None. Several hooks on one name run in the given order.
    """
    for item in fwd_hooks:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and callable(item[1])):
            raise ValueError(f"fwd_hooks: expected (name, fn) pairs, got {item!r}")
    points = _resolve(model, [name for name, _ in fwd_hooks])
    handles = []
    try:
        for name, fn in fwd_hooks:
            handles.append(_attach(points[name], name, fn))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _apply(name: str, fn: HookFn, point: _Point, value: Any) -> Any:
    act = point.get(value)
    new = fn(act, name)
    if new is None:
        return None
    if not isinstance(new, torch.Tensor) or new.shape != act.shape:
        got = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
        raise ValueError(
            f"hook {name!r}: must return None or a tensor of shape {tuple(act.shape)}, got {got}"
        )
    return point.put(value, new)


def _attach(point: _Point, name: str, fn: HookFn) -> Any:
    if point.pre:

        def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> Any:
            if args:
                new = _apply(name, fn, point, args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            # HF layers may receive hidden_states by keyword
            key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
            new = _apply(name, fn, point, kwargs[key])
            return None if new is None else (args, {**kwargs, key: new})

        return point.module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def hook(module: nn.Module, args: tuple, output: Any) -> Any:
        return _apply(name, fn, point, output)

    return point.module.register_forward_hook(hook)


def logits_of(output: Any) -> torch.Tensor:
    """``[B, T, V]`` logits of a MixerLM ``LMOutput`` or an HF ``CausalLMOutput``."""
    logits = getattr(output, "logits", None)
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"output: expected a model output with .logits, got {type(output).__name__}")
    return logits


def run_with_hooks(
    model: nn.Module, input_ids: torch.Tensor, fwd_hooks: Sequence[tuple[str, HookFn]], **kwargs: Any
) -> Any:
    """``model(input_ids, **kwargs)`` with the hooks attached; returns the model's output."""
    with hooks(model, fwd_hooks):
        return model(input_ids, **kwargs)


def run_with_cache(
    model: nn.Module,
    input_ids: torch.Tensor,
    names: Sequence[str] | None = None,
    detach: bool = True,
    **kwargs: Any,
) -> tuple[Any, dict[str, torch.Tensor]]:
    """Run ``model`` and keep the named activations (None = all of them).

    Returns ``(output, cache)``: ``cache[name]`` in the layout of the module docstring, detached
    unless ``detach=False`` (then gradients flow through the cached tensors).
    """
    names = hook_names(model) if names is None else list(names)
    cache: dict[str, torch.Tensor] = {}

    def keep(act: torch.Tensor, name: str) -> None:
        cache[name] = act.detach() if detach else act

    out = run_with_hooks(model, input_ids, [(n, keep) for n in names], **kwargs)
    return out, cache
