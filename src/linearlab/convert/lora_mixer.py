"""``apply_lora_mixer_``: put routed LoRA experts (LoRA-Mixer, arXiv 2507.00029) into a model's projections.

In place, like torchao's ``quantize_`` and :func:`linearlab.convert.linear_swap.convert_`: every
``nn.Linear`` chosen by ``config.target_modules`` (peft's matching: a list of module-name
suffixes or a regex string) or by ``filter_fn(module, fqn)`` becomes a
:class:`~linearlab.layers.linear.lora_mixer.LoRAMixerLinear`. As with peft's ``get_peft_model``,
everything else is frozen afterwards: the routers always train, the experts only with
``train_experts=True`` (``False`` is the paper's plug-and-play regime over frozen LoRAs).

Experts trained elsewhere with peft (one ``get_peft_model`` run per task) load with
:func:`load_experts_` from ``peft.get_peft_model_state_dict`` of each run.

Example::

    apply_lora_mixer_(model, LoRAMixerConfig(n_experts=4, r=4, target_modules=["qkv_proj", "o_proj"]))
    load_experts_(model, [get_peft_model_state_dict(m) for m in task_models], freeze=True)
    loss = task_loss + routing_aux_loss(model, kind="rsl", alpha=1.0, lam=0.1)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from linearlab.convert.linear_swap import FilterFn, convert_
from linearlab.layers.linear.lora_mixer import (
    ROUTINGS,
    LoRAMixerLinear,
    check_top_k,
    expert_load,
    routing_entropy,
    specialization_balance_loss,
)
from linearlab.layers.mixers.mom import load_balancing_loss

AUX_KINDS = ("rsl", "switch", "none")


@dataclass
class LoRAMixerConfig:
    """How :func:`apply_lora_mixer_` adapts each chosen projection.

    Args:
        n_experts: LoRA experts per projection ``E``.
        r, lora_alpha, lora_dropout, use_rslora, init_lora_weights: each expert's
            :class:`peft.LoraConfig` settings (peft's meaning and defaults, except ``r=4, lora_alpha=8``).
        target_modules: module-name suffixes (list) or a regex (str), matched as peft does; None
            with no ``filter_fn``: every ``nn.Linear``.
        top_k: experts per token in top-k routing (``1 <= top_k <= n_experts``; the paper: 3).
        train_routing, eval_routing: routing modes (``"soft"``, ``"topk"``, ``"straight_through"``).
        train_experts: keep the experts trainable (joint training); False: router-only training.
    """

    n_experts: int = 4
    r: int = 4
    lora_alpha: float = 8.0
    lora_dropout: float = 0.0
    use_rslora: bool = False
    init_lora_weights: bool | str = True
    target_modules: list[str] | str | None = None
    top_k: int = 3
    train_routing: str = "soft"
    eval_routing: str = "topk"
    train_experts: bool = True
    router_bias: bool = False
    _lora: object = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.n_experts, int) or isinstance(self.n_experts, bool) or self.n_experts < 1:
            raise ValueError(f"n_experts: expected an int >= 1, got {self.n_experts!r}")
        check_top_k(self.top_k, self.n_experts)
        for name in ("train_routing", "eval_routing"):
            if getattr(self, name) not in ROUTINGS:
                raise ValueError(f"{name}: expected one of {ROUTINGS}, got {getattr(self, name)!r}")
        if not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"r: expected an int >= 1, got {self.r!r}")

    def lora_config(self):
        """The :class:`peft.LoraConfig` every expert is built from."""
        if self._lora is None:
            from peft import LoraConfig

            self._lora = LoraConfig(
                r=self.r,
                lora_alpha=self.lora_alpha,
                lora_dropout=self.lora_dropout,
                use_rslora=self.use_rslora,
                init_lora_weights=self.init_lora_weights,
                target_modules=self.target_modules,
                bias="none",
            )
        return self._lora

    def matches(self, fqn: str) -> bool:
        """Whether peft's ``target_modules`` matching selects the module called ``fqn``."""
        from peft.tuners.tuners_utils import check_target_module_exists

        return bool(check_target_module_exists(self.lora_config(), fqn))

    def replace(self, module: nn.Linear, fqn: str) -> LoRAMixerLinear:
        """The :class:`LoRAMixerLinear` that replaces ``module`` (the ``convert_`` protocol)."""
        return LoRAMixerLinear(
            module,
            self.n_experts,
            self.lora_config(),
            top_k=self.top_k,
            train_routing=self.train_routing,
            eval_routing=self.eval_routing,
            router_bias=self.router_bias,
        )


def apply_lora_mixer_(
    model: nn.Module, config: LoRAMixerConfig, filter_fn: FilterFn | None = None
) -> nn.Module:
    """Replace the chosen ``nn.Linear`` layers of ``model`` by LoRA-Mixer layers, in place; returns ``model``.

    Layers are chosen by ``filter_fn(module, fqn)`` if given, else by ``config.target_modules``
    (every linear layer if that is None). Afterwards only the routers (and, with
    ``config.train_experts``, the experts) require gradients, as after peft's ``get_peft_model``.

    Raises:
        TypeError: ``config`` is not a :class:`LoRAMixerConfig`.
        ValueError: nothing matches (the message lists the model's linear layers).
    """
    if not isinstance(config, LoRAMixerConfig):
        raise TypeError(f"config: expected a LoRAMixerConfig, got {type(config).__name__}")
    if filter_fn is None and config.target_modules is not None:

        def filter_fn(module: nn.Module, fqn: str) -> bool:
            return isinstance(module, nn.Linear) and config.matches(fqn)

    convert_(model, config, filter_fn)
    set_trainable_(model, train_experts=config.train_experts)
    return model


def mixer_layers(model: nn.Module) -> dict[str, LoRAMixerLinear]:
    """The :class:`LoRAMixerLinear` modules of ``model`` by fully qualified name."""
    return {fqn: m for fqn, m in model.named_modules() if isinstance(m, LoRAMixerLinear)}


def _layers_or_error(model: nn.Module) -> dict[str, LoRAMixerLinear]:
    layers = mixer_layers(model)
    if not layers:
        raise ValueError(
            f"model: {type(model).__name__} has no LoRAMixerLinear layers; call apply_lora_mixer_"
        )
    return layers


def set_trainable_(model: nn.Module, train_experts: bool = True) -> None:
    """Freeze every parameter but the LoRA-Mixer routers (and the experts if ``train_experts``)."""
    layers = _layers_or_error(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in layers.values():
        for p in layer.router.parameters():
            p.requires_grad_(True)
        for p in layer.expert_parameters():
            p.requires_grad_(train_experts)


def load_experts_(
    model: nn.Module, adapters: Sequence[Mapping[str, torch.Tensor]], freeze: bool | None = None
) -> None:
    """Load ``adapters[e]`` (a peft adapter state dict) into expert ``e`` of every LoRA-Mixer layer.

    Each adapter is a state dict as returned by ``peft.get_peft_model_state_dict`` (keys ending in
    ``<fqn>.lora_A.weight`` / ``<fqn>.lora_B.weight``, optionally with an adapter name before
    ``.weight``) for the same base model, so the layer at ``fqn`` finds its matrices by suffix.
    ``freeze=True`` then freezes the experts (router-only training), ``False`` unfreezes them.

    Raises:
        ValueError: more adapters than experts, or an adapter without a matrix for some layer, or
            with other shapes (the message names the adapter, layer and shapes).
    """
    layers = _layers_or_error(model)
    n_experts = next(iter(layers.values())).n_experts
    if len(adapters) > n_experts:
        raise ValueError(f"adapters: {len(adapters)} given but the layers have only {n_experts} experts")
    for e, adapter in enumerate(adapters):
        for fqn, layer in layers.items():
            mats = {}
            for part in ("lora_A", "lora_B"):
                hits = [
                    v
                    for k, v in adapter.items()
                    if (k.startswith(f"{fqn}.{part}.") or f".{fqn}.{part}." in k) and k.endswith("weight")
                ]
                if len(hits) != 1:
                    raise ValueError(
                        f"adapters[{e}]: expected one {part} weight for layer {fqn!r}, found {len(hits)}"
                    )
                mats[part] = hits[0]
            try:
                layer.load_expert_(e, mats["lora_A"], mats["lora_B"])
            except ValueError as err:
                raise ValueError(f"adapters[{e}], layer {fqn!r}: {err}") from None
    if freeze is not None:
        for layer in layers.values():
            for p in layer.expert_parameters():
                p.requires_grad_(not freeze)


def routing_aux_loss(
    model: nn.Module,
    kind: str = "rsl",
    alpha: float = 1.0,
    lam: float = 0.1,
    entropy_sign: int = 1,
    scale: float = 0.01,
) -> torch.Tensor:
    """Sum over the LoRA-Mixer layers of an auxiliary routing loss on their last forward.

    ``kind="rsl"``: :func:`~linearlab.layers.linear.lora_mixer.specialization_balance_loss` with
    ``alpha, lam, entropy_sign``; ``"switch"``: ``scale *`` the Switch load-balancing loss
    (:func:`~linearlab.layers.mixers.mom.load_balancing_loss`); ``"none"``: 0.
    """
    if kind not in AUX_KINDS:
        raise ValueError(f"kind: expected one of {AUX_KINDS}, got {kind!r}")
    layers = _layers_or_error(model)
    total = torch.zeros(())
    if kind == "none":
        return total
    for fqn, layer in layers.items():
        r = layer.last_routing
        if r is None:
            raise ValueError(f"layer {fqn!r} has not run a forward yet: no routing to regularise")
        if kind == "rsl":
            term = specialization_balance_loss(r.probs, r.indices, alpha, lam, entropy_sign)
        else:
            term = scale * load_balancing_loss(r.probs, r.indices, layer.n_experts)
        total = total + term
    return total


@torch.no_grad()
def routing_stats(model: nn.Module) -> dict[str, dict[str, float | list[float]]]:
    """Per LoRA-Mixer layer, from its last forward: mean routing entropy (nats) and top-k load per expert."""
    out: dict[str, dict[str, float | list[float]]] = {}
    for fqn, layer in _layers_or_error(model).items():
        r = layer.last_routing
        if r is None:
            continue
        out[fqn] = {
            "entropy": float(routing_entropy(r.probs)),
            "load": expert_load(r.indices, layer.n_experts).tolist(),
        }
    return out


def set_top_k_(model: nn.Module, top_k: int) -> None:
    """Set the top-k of every LoRA-Mixer layer (e.g. to evaluate top-1/2/3)."""
    for layer in _layers_or_error(model).values():
        check_top_k(top_k, layer.n_experts)
        layer.top_k = top_k
