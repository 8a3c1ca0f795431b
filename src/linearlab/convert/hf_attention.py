"""A linearised attention layer for Hugging Face Llama-family models, and its decoding cache.

:class:`HFLinearizedAttention` replaces a model's ``self_attn`` module (``LlamaAttention``,
``MistralAttention``, ``Qwen2Attention``). It keeps the pretrained ``q_proj``, ``k_proj``,
``v_proj``, ``o_proj`` (same objects, same ``state_dict`` keys, Qwen2's q/k/v biases included),
applies the model's own rotary embedding, repeats grouped key/value heads to the query heads and
hands ``q, k, v`` to a :class:`~linearlab.convert.operator.LinearizedOperator`.

Decoding: Hugging Face passes one ``Cache`` through all layers. A linearised layer keeps its
recurrent state in a :class:`LinearStateLayer` placed at its own index of that cache (it replaces
the empty key/value layer the cache made for it), so ``generate`` works unchanged, softmax layers
kept by ``filter_fn`` still use their key/value layers, and the memory of a linearised layer
does not grow with the tokens generated.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers.cache_utils import Cache, CacheLayerMixin

from linearlab.convert.operator import LinearizedOperator


class LinearStateLayer(CacheLayerMixin):
    """One layer's slot in a Hugging Face ``Cache``: a recurrent state dict and the tokens it has seen.

    It answers the cache's questions (sequence length, mask sizes, beam reordering) like a key/value
    layer would, so masks for the model's remaining softmax layers come out right.
    """

    is_croppable = False
    supports_early_init = False

    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, torch.Tensor] | None = None
        self.seen_tokens = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        raise TypeError("LinearStateLayer holds a recurrent state, not keys and values")

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("LinearStateLayer holds a recurrent state, not keys and values; use update_state")

    def update_state(self, state: dict[str, torch.Tensor], num_new_tokens: int) -> None:
        self.state = state
        self.seen_tokens += num_new_tokens
        self.is_initialized = True

    def get_seq_length(self) -> int:
        return self.seen_tokens

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.seen_tokens + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def state_bytes(self) -> int:
        """Bytes held by this layer's state (constant in the number of tokens seen)."""
        if self.state is None:
            return 0
        return sum(t.numel() * t.element_size() for t in self.state.values())

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if self.state is not None:
            self.state = {name: fn(t) for name, t in self.state.items()}

    def offload(self) -> None:
        return

    def prefetch(self) -> None:
        return

    def reset(self) -> None:
        self.state = None
        self.seen_tokens = 0
        self.is_initialized = False

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._map(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._map(lambda t: t[indices])

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove != 0:
            raise ValueError(
                f"crop({tokens_to_remove}): a linearised layer's recurrent state cannot drop tokens; "
                "assisted / speculative decoding is not supported"
            )


def state_layer(cache: Cache, layer_idx: int) -> LinearStateLayer:
    """The :class:`LinearStateLayer` of ``layer_idx`` in ``cache``, put there on first use."""
    while len(cache.layers) <= layer_idx:
        # a cache built without a config grows its layers lazily, one per index
        cache.layers.append(cache.layer_class_to_replicate())
    layer = cache.layers[layer_idx]
    if isinstance(layer, LinearStateLayer):
        return layer
    if getattr(layer, "get_seq_length", lambda: 0)() > 0:
        raise ValueError(
            f"cache: layer {layer_idx} already holds {layer.get_seq_length()} softmax keys/values; "
            "a linearised layer needs a fresh cache (start generation again after linearize_)"
        )
    layer = LinearStateLayer()
    cache.layers[layer_idx] = layer
    return layer


class HFLinearizedAttention(nn.Module):
    """Drop-in for a Hugging Face ``LlamaAttention``-style module; see the module docstring.

    ``forward(hidden_states: [B, T, D], position_embeddings=(cos, sin), attention_mask=None,
    cache=None, **kwargs) -> (out: [B, T, D], None)``. The attention mask is not used: the
    operator is causal by construction, and padded batches are not supported (a recurrent state
    cannot skip tokens).
    """

    def __init__(self, attn: nn.Module, operator: LinearizedOperator) -> None:
        super().__init__()
        self.config = attn.config
        self.layer_idx = attn.layer_idx
        self.head_dim = attn.head_dim
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (
            attn.q_proj,
            attn.k_proj,
            attn.v_proj,
            attn.o_proj,
        )
        self.num_heads = self.q_proj.out_features // self.head_dim
        self.num_kv_heads = self.k_proj.out_features // self.head_dim
        self.operator = operator
        # the model family's own rotary function (rotate-half for Llama, Mistral and Qwen2)
        self._apply_rotary: Callable = sys.modules[type(attn).__module__].apply_rotary_pos_emb

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        past_key_values: Cache | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        if position_embeddings is None:
            raise ValueError("position_embeddings: the model must pass (cos, sin) to its attention layers")
        cache = cache if cache is not None else past_key_values
        B, T, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(hidden_states).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(hidden_states).view(B, T, self.num_kv_heads, self.head_dim)
        q_raw, k_raw = q, k
        cos, sin = position_embeddings
        q, k = self._apply_rotary(q, k, cos, sin, unsqueeze_dim=2)  # heads on dim 2 here
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:
            # query head h reads key/value head h // groups, as Hugging Face's repeat_kv does
            k, v, k_raw = (t.repeat_interleave(groups, dim=2) for t in (k, v, k_raw))
        slot = state_layer(cache, self.layer_idx) if cache is not None else None
        state = None if slot is None else slot.state
        o, state = self.operator(q, k, v, state, slot is not None, q_raw=q_raw, k_raw=k_raw)
        if slot is not None:
            slot.update_state(state, T)
        return self.o_proj(o.reshape(B, T, self.num_heads * self.head_dim)), None
