"""``MixerLM``: one causal language model for every registered token mixer and hybrid stack.

Layout (pre-norm, nanoGPT / LLaMA style)::

    embed -> [x + mixer(norm(x)); x + mlp(norm(x))] * n_layers -> norm -> head (tied by default)

Each layer's mixer comes from the registry (``create_mixer``), so a hybrid is just a
``block_pattern`` such as ``"GGGA"``. Generation prefills the prompt in one call (mixers use
their chunk ops) and then feeds one token at a time with the carried per-layer state, so linear
mixers decode with constant memory per step.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from linearlab.layers.norms import RepBN, make_norm, repbn_modules
from linearlab.layers.registry import create_mixer
from linearlab.models.config import ModelConfig

State = list[Any]


def map_state(state: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply ``fn`` to every batch-first tensor in a nested mixer state (dicts, lists, tuples).

    Used to select / repeat batch rows of the per-layer states (beam search, HF cache reordering).
    """
    if isinstance(state, torch.Tensor):
        # 0-dim entries (positions, counters) are shared by the whole batch
        return fn(state) if state.dim() > 0 else state
    if isinstance(state, dict):
        return {k: map_state(v, fn) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(map_state(v, fn) for v in state)
    return state


@dataclass
class LMOutput:
    """What :meth:`MixerLM.forward` returns.

    Attributes:
        logits: ``[B, T, V]``.
        state: one mixer state per layer (pass it back as ``state=`` to continue the sequence).
        hidden_states: ``n_layers + 1`` tensors ``[B, T, D]`` (embeddings, then the residual
            stream after each block) when requested, else None.
        aux_loss: scalar sum of the mixers' auxiliary losses (training mode; 0 if none).
    """

    logits: torch.Tensor
    state: State
    hidden_states: list[torch.Tensor] | None
    aux_loss: torch.Tensor


class MLP(nn.Module):
    """Channel mixer: SwiGLU (``kind="glu"``) or GELU MLP (``kind="mlp"``). ``[..., D] -> [..., D]``."""

    def __init__(self, d_model: int, hidden: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        # GLU: one input matmul produces both the gate and the value halves
        width = 2 * hidden if kind == "glu" else hidden
        self.fc_in = nn.Linear(d_model, width, bias=False)
        self.fc_out = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc_in(x)
        if self.kind == "glu":
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value
        else:
            h = F.gelu(h)
        return self.fc_out(h)


class Block(nn.Module):
    """Pre-norm residual block: ``x + mixer(norm(x))`` then ``x + mlp(norm(x))``. ``[B, T, D] -> [B, T, D]``."""

    def __init__(self, config: ModelConfig, layer_idx: int, mixer: str, mixer_kwargs: dict[str, Any]) -> None:
        super().__init__()
        d = config.d_model
        self.mixer_norm = make_norm(config.norm, d, config.norm_eps, config.repbn_warmup_steps)
        try:
            self.mixer = create_mixer(
                mixer, d_model=d, layer_idx=layer_idx, num_layers=config.n_layers, **mixer_kwargs
            )
        except KeyError as err:
            raise ValueError(f"layer {layer_idx}: {err.args[0]}") from None
        except TypeError as err:
            # a wrong kwarg name: say which layer and mixer it was meant for
            raise ValueError(f"layer {layer_idx} (mixer {mixer!r}) kwargs {mixer_kwargs}: {err}") from None
        self.mixer_name = mixer
        if config.mlp == "none":
            self.mlp_norm = None
            self.mlp = None
        else:
            self.mlp_norm = make_norm(config.norm, d, config.norm_eps, config.repbn_warmup_steps)
            self.mlp = MLP(d, config.mlp_hidden, config.mlp)

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        y, state = self.mixer(self.mixer_norm(x), state)
        x = x + y
        if self.mlp is not None:
            x = x + self.mlp(self.mlp_norm(x))
        return x, state


class MixerLM(nn.Module):
    """Causal LM over any registered mixer or hybrid ``block_pattern`` (see :class:`ModelConfig`).

    Example:
        >>> model = MixerLM(ModelConfig(mixer="gla", d_model=64, n_layers=2))
        >>> out = model(torch.randint(0, 256, (2, 16)))          # out.logits: [2, 16, 256]
        >>> more = model(torch.randint(0, 256, (2, 1)), state=out.state)   # continue by one token
        >>> tokens = model.generate(torch.randint(0, 256, (1, 8)), max_new_tokens=20)
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise ValueError(f"MixerLM: config must be a ModelConfig, got {type(config).__name__}")
        config.validate()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(
            Block(config, i, name, kwargs) for i, (name, kwargs) in enumerate(config.layer_mixers())
        )
        self.norm = make_norm(config.norm, config.d_model, config.norm_eps, config.repbn_warmup_steps)
        # with tied embeddings there is no head module: logits use embed.weight directly, so no
        # parameter is shared between two modules (safetensors refuses shared storage)
        self.lm_head = (
            None if config.tie_embeddings else nn.Linear(config.d_model, config.vocab_size, bias=False)
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # mixers keep their own init (gates and decays have carefully chosen starting values)
        std = self.config.init_std
        nn.init.normal_(self.embed.weight, std=std)
        for block in self.blocks:
            if block.mlp is not None:
                nn.init.normal_(block.mlp.fc_in.weight, std=std)
                # GPT-2: scale residual output projections down with depth
                nn.init.normal_(block.mlp.fc_out.weight, std=std / (2 * self.config.n_layers) ** 0.5)
        if self.lm_head is not None:
            nn.init.normal_(self.lm_head.weight, std=std)

    @property
    def mixer_names(self) -> list[str]:
        """Registered mixer name of each layer."""
        return [block.mixer_name for block in self.blocks]

    def _check_input(self, input_ids: torch.Tensor, state: State | None) -> None:
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            shape = (
                tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
            )
            raise ValueError(f"input_ids: expected a [B, T] tensor of token ids, got {shape}")
        if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
            raise ValueError(f"input_ids: expected an integer dtype (torch.long), got {input_ids.dtype}")
        batch, seq_len = input_ids.shape
        if batch == 0 or seq_len == 0:
            raise ValueError(f"input_ids: batch and sequence must be non-empty, got shape {(batch, seq_len)}")
        if seq_len > self.config.max_seq_len:
            raise ValueError(
                f"input_ids: sequence length {seq_len} exceeds max_seq_len={self.config.max_seq_len}"
            )
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= self.config.vocab_size:
            raise ValueError(
                f"input_ids: token ids must be in [0, {self.config.vocab_size}), got values in [{lo}, {hi}]"
            )
        if state is not None and (not isinstance(state, (list, tuple)) or len(state) != len(self.blocks)):
            got = len(state) if isinstance(state, (list, tuple)) else type(state).__name__
            raise ValueError(
                f"state: expected a list of {len(self.blocks)} per-layer states (or None), got {got}"
            )

    def logits_from_hidden(self, h: torch.Tensor) -> torch.Tensor:
        """Final norm + LM head: ``[B, T, D] -> [B, T, V]`` (used by logit-lens style analysis too)."""
        h = self.norm(h)
        if self.lm_head is None:
            return F.linear(h, self.embed.weight)
        return self.lm_head(h)

    def forward(
        self, input_ids: torch.Tensor, state: State | None = None, return_hidden_states: bool = False
    ) -> LMOutput:
        """Run ``input_ids: [B, T]`` (continuing from ``state`` if given).

        Returns:
            :class:`LMOutput` with ``logits [B, T, V]``, the per-layer ``state`` list,
            ``hidden_states`` (``n_layers + 1`` x ``[B, T, D]``) if requested, and ``aux_loss``.
        """
        self._check_input(input_ids, state)
        x = self.embed(input_ids)
        hidden = [x] if return_hidden_states else None
        new_state: State = []
        for i, block in enumerate(self.blocks):
            x, layer_state = block(x, None if state is None else state[i])
            new_state.append(layer_state)
            if hidden is not None:
                hidden.append(x)
        logits = self.logits_from_hidden(x)
        aux = self._collect_aux_loss(logits)
        # RepBN's schedule is NOT advanced here: an extra forward (evaluation in train mode,
        # gradient accumulation) must not count as a training step; see advance_schedules()
        return LMOutput(logits=logits, state=new_state, hidden_states=hidden, aux_loss=aux)

    @torch.no_grad()
    def advance_schedules(self) -> None:
        """Advance every per-step schedule by one step: call once per optimizer step.

        Today that is SLAB's LayerNorm -> BatchNorm annealing of every :class:`RepBN` (a no-op
        without ``norm="repbn"``). The training loop in :mod:`linearlab.train` calls it
        automatically, after each optimizer step, on any model that defines it; a hand-written
        loop must call it itself. ``forward`` never advances the schedule, so extra forwards
        and gradient accumulation do not distort it.
        """
        for norm in repbn_modules(self):
            norm.step()

    def _collect_aux_loss(self, like: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), device=like.device, dtype=torch.float32)
        for block in self.blocks:
            aux = getattr(block.mixer, "aux_loss", None)
            if isinstance(aux, torch.Tensor):
                if self.training:
                    total = total + aux.float()
                # clear it: a stale value must not be counted twice or keep the graph alive
                block.mixer.aux_loss = None
        return total

    def loss(self, input_ids: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
        """Mean next-token cross entropy plus the mixers' aux losses.

        Args:
            input_ids: ``[B, T]`` token ids.
            targets: ``[B, T]`` target ids (``ignore_index`` entries are skipped).
        """
        if not isinstance(targets, torch.Tensor) or targets.shape != input_ids.shape:
            got = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
            raise ValueError(f"targets: expected shape {tuple(input_ids.shape)} like input_ids, got {got}")
        out = self(input_ids)
        ce = F.cross_entropy(
            out.logits.float().flatten(0, 1), targets.flatten().long(), ignore_index=ignore_index
        )
        return ce + out.aux_loss

    def state_size(self, seq_len: int) -> int:
        """Scalars of recurrent state / KV cache per sequence after ``seq_len`` tokens (all layers)."""
        return sum(int(block.mixer.state_size(seq_len)) for block in self.blocks)

    def num_params(self, include_embeddings: bool = True) -> int:
        """Number of parameters (optionally without the embedding matrix)."""
        n = sum(p.numel() for p in self.parameters())
        return n if include_embeddings else n - self.embed.weight.numel()

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        num_beams: int = 1,
    ) -> torch.Tensor:
        """Autoregressive decoding: one prefill call, then one token per step with the carried state.

        Args:
            input_ids: prompt ``[B, T]``.
            max_new_tokens: number of tokens to append (>= 0).
            temperature: 0 = greedy (argmax); > 0 samples from ``softmax(logits / temperature)``.
            top_k: sample only among the ``top_k`` most likely tokens (None = all).
            generator: random generator for sampling (reproducible draws; None = torch's global
                generator).
            progress: show a progress bar (only on a terminal).
            num_beams: > 1 = beam search (needs ``temperature=0``): keep the ``num_beams``
                continuations with the highest summed log-probability, carry one mixer state per
                beam, and return the best beam of each prompt.

        Returns:
            ``[B, T + max_new_tokens]``: the prompt followed by the new tokens.

        Same tokens as ``transformers``' ``generate`` on
        :class:`~linearlab.models.hf.LinearLabForCausalLM` (no EOS token set) with the matching
        arguments: ``do_sample=False``; ``do_sample=True, temperature=t, top_k=k`` (HF's ``top_k``
        defaults to 50: pass ``top_k=0`` for None) under the same ``torch.manual_seed`` and
        ``generator=None``, because both draw with ``torch.multinomial`` on the same
        probabilities; ``num_beams=n, do_sample=False``.

        The model's train/eval mode is left as is; call ``model.eval()`` first (RepBN and dropout
        in training mode are not causal).
        """
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens: expected an int >= 0, got {max_new_tokens!r}")
        if temperature < 0:
            raise ValueError(f"temperature: expected >= 0 (0 = greedy), got {temperature!r}")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k: expected None or an int >= 1, got {top_k!r}")
        if not isinstance(num_beams, int) or isinstance(num_beams, bool) or num_beams < 1:
            raise ValueError(f"num_beams: expected an int >= 1, got {num_beams!r}")
        if num_beams > 1 and temperature > 0:
            raise ValueError(
                f"num_beams={num_beams} with temperature={temperature}: beam search is deterministic; "
                "use temperature=0 (or num_beams=1 to sample)"
            )
        total = input_ids.shape[-1] + max_new_tokens if isinstance(input_ids, torch.Tensor) else 0
        if total > self.config.max_seq_len:
            raise ValueError(
                f"generate: prompt length + max_new_tokens = {total} exceeds max_seq_len={self.config.max_seq_len}"
            )
        if max_new_tokens == 0:
            self._check_input(input_ids, None)
            return input_ids
        bar = tqdm(total=max_new_tokens, desc="generate", disable=not (progress and sys.stderr.isatty()))
        if num_beams > 1:
            result = self._beam_search(input_ids, max_new_tokens, num_beams, bar)
            bar.close()
            return result
        out = self(input_ids)
        state = out.state
        tokens = [input_ids]
        for i in range(max_new_tokens):
            nxt = self._pick(out.logits[:, -1], temperature, top_k, generator)  # [B, 1]
            tokens.append(nxt)
            bar.update(1)
            if i + 1 < max_new_tokens:
                out = self(nxt, state=state)
                state = out.state
        bar.close()
        return torch.cat(tokens, dim=1)

    def _beam_search(
        self, input_ids: torch.Tensor, max_new_tokens: int, num_beams: int, bar: tqdm
    ) -> torch.Tensor:
        """Beam search over ``input_ids: [B, T]`` -> best beam per row ``[B, T + max_new_tokens]``.

        Scores are summed float32 log-probabilities; all beams have the same length (no EOS), so
        a length penalty would not change the ranking. Mirrors ``transformers``' beam search:
        one ``topk`` over all ``num_beams * V`` continuations per step, then the parent beams'
        states are selected (``map_state`` + ``index_select``) before feeding the new tokens.
        """
        batch, k, vocab = input_ids.shape[0], num_beams, self.config.vocab_size
        device = input_ids.device
        out = self(input_ids)
        # prefill once per prompt, then give each of its k beams a copy of the state
        state = map_state(out.state, lambda t: t.repeat_interleave(k, dim=0))
        logits = out.logits[:, -1].repeat_interleave(k, dim=0)  # [B*k, V]
        seqs = input_ids.repeat_interleave(k, dim=0)  # [B*k, T]
        # only beam 0 is live at the start, else the k identical copies would all pick the same
        # tokens; dead beams (-inf) are never chosen while a live continuation remains
        scores = torch.full((batch, k), float("-inf"), device=device)
        scores[:, 0] = 0.0
        row_offset = torch.arange(batch, device=device).unsqueeze(1) * k  # [B, 1]
        for i in range(max_new_tokens):
            logp = torch.log_softmax(logits.float(), dim=-1).view(batch, k, vocab)
            candidates = (scores.unsqueeze(-1) + logp).view(batch, k * vocab)
            scores, flat = candidates.topk(k, dim=-1)  # [B, k], best first
            parents = (flat // vocab + row_offset).view(-1)  # [B*k] row of each survivor's parent
            new_tokens = (flat % vocab).view(-1, 1)  # [B*k, 1]
            seqs = torch.cat([seqs.index_select(0, parents), new_tokens], dim=1)
            bar.update(1)
            if i + 1 < max_new_tokens:
                state = map_state(state, lambda t, rows=parents: t.index_select(0, rows))
                out = self(new_tokens, state=state)
                logits, state = out.logits[:, -1], out.state
        # topk sorted each row's beams best first
        return seqs.view(batch, k, -1)[:, 0]

    @staticmethod
    def _pick(
        logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Next token ``[B, 1]`` from last-position logits ``[B, V]``."""
        if temperature == 0:
            return logits.argmax(dim=-1, keepdim=True)
        logits = logits.float() / temperature
        if top_k is not None and top_k < logits.shape[-1]:
            kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        return torch.multinomial(probs, 1, generator=generator)


def fuse_repbn_(model: MixerLM) -> MixerLM:
    """Fold every (eval-mode, fully annealed) RepBN of ``model`` away for inference, in place.

    - the norm before an MLP is folded into the MLP's input projection;
    - the final norm is folded into the LM head (a tied head is untied: it gets its own weight
      ``embed.weight * scale`` and a bias, so the embedding is unchanged);
    - the norm before a mixer (whose first layer is mixer-specific) becomes a per-channel
      :class:`~linearlab.layers.norms.ChannelAffine`: still no statistics to compute.

    The model must be in eval mode and every RepBN must have ``gamma == 0`` (else ValueError).
    The fused model gives the same outputs in eval mode but is inference-only: its state_dict
    no longer matches ``model.config``.
    """
    if not isinstance(model, MixerLM):
        raise ValueError(f"fuse_repbn_: expected a MixerLM, got {type(model).__name__}")
    if model.training:
        raise ValueError("fuse_repbn_: call model.eval() first (BatchNorm must use its running statistics)")
    for norm in repbn_modules(model):
        # check every norm before changing anything, so a failure leaves the model intact
        norm.affine()
    for block in model.blocks:
        if isinstance(block.mixer_norm, RepBN):
            block.mixer_norm = block.mixer_norm.to_affine()
        if isinstance(block.mlp_norm, RepBN):
            block.mlp.fc_in = block.mlp_norm.fuse_into(block.mlp.fc_in)
            block.mlp_norm = nn.Identity()
    if isinstance(model.norm, RepBN):
        head = model.lm_head
        if head is None:
            head = nn.Linear(model.config.d_model, model.config.vocab_size, bias=False)
            head = head.to(device=model.embed.weight.device, dtype=model.embed.weight.dtype)
            with torch.no_grad():
                head.weight.copy_(model.embed.weight)
        model.lm_head = model.norm.fuse_into(head)
        model.norm = nn.Identity()
    return model
