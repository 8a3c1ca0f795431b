"""LoRA-Mixer: routed LoRA experts inside a projection (arXiv 2507.00029).

Li, Song, Zhou, Zhang, Yu, Yang, "LoRA-Mixer: Coordinate Modular LoRA Experts Through Serial
Attention Routing", ICLR 2026. The paper's code is not released; formulas below follow the
abstract and public summaries (see ``shared/notes/linear-layer-replacements.md`` §9).

A projection ``y = W x + b`` gets ``E`` LoRA experts ``Delta_e x = s_e B_e A_e x`` (peft's LoRA
layers: one peft adapter per expert, so rank, alpha, dropout, rsLoRA and init follow
:class:`peft.LoraConfig`) and a token router ``p(x) = softmax(W_r x)``::

    y = W x + b + sum_e w_e(x) Delta_e x

with mixing weights ``w`` chosen by the routing mode:

- ``"soft"`` (training default): ``w = p``, dense and fully differentiable;
- ``"topk"`` (inference default): the ``top_k`` largest ``p`` renormalised to sum to 1, 0 elsewhere;
- ``"straight_through"``: the top-k weights forward and the soft ``p`` gradient backward (one
  reading of the paper's "differentiable hard-soft top-k"; unverified against the PDF).

With ``top_k = E`` top-k routing is dense soft fusion. The router's decision of the last forward
is kept in :attr:`LoRAMixerLinear.last_routing` for the auxiliary losses below.

Losses:
- :func:`specialization_balance_loss` (the paper's RSL / SBL): ``alpha sum_i pbar_i fbar_i +
  entropy_sign * lam * mean_x H(p(x))``. The paper writes ``- lam H``, which *raises* entropy while
  the text asks for peaked routing; the default ``entropy_sign=+1`` minimises entropy, ``-1`` is
  the formula as printed.
- :func:`expert_preservation_loss`: ``beta sum_e ||theta_e - theta_e^0||^2`` over the experts.
- The Switch load-balancing loss is :func:`linearlab.layers.mixers.mom.load_balancing_loss`.

Apply to a whole model with :func:`linearlab.convert.lora_mixer.apply_lora_mixer_`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import nn

from linearlab.papers import LAYERS, declare_paper

ROUTINGS = ("soft", "topk", "straight_through")


def expert_name(i: int) -> str:
    """The peft adapter name of expert ``i``."""
    return f"expert_{i}"


class MixerRouting(NamedTuple):
    """The router's decision for ``N`` tokens over ``E`` experts.

    Attributes:
        probs: ``[..., E]`` soft router probabilities ``p``.
        indices: ``[..., top_k]`` the top-k experts, highest probability first.
        weights: ``[..., E]`` the mixing weights actually used in the forward.
    """

    probs: torch.Tensor
    indices: torch.Tensor
    weights: torch.Tensor


def _default_lora_config():
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, bias="none")


class LoRAMixerLinear(nn.Module):
    """``E`` routed LoRA experts around a frozen ``nn.Linear`` (see the module docstring).

    Args:
        base: the projection to adapt (kept as ``self.lora.base_layer``; its weights are not copied).
        n_experts: number of LoRA experts ``E`` (>= 1).
        lora_config: a :class:`peft.LoraConfig` giving each expert's ``r``, ``lora_alpha``,
            ``lora_dropout``, ``use_rslora`` and ``init_lora_weights`` (default ``r=4, lora_alpha=8``).
            With peft's default init every expert starts at ``Delta_e = 0``.
        top_k: experts used per token by top-k routing (``1 <= top_k <= E``). Default 3 (the
            paper's inference setting), or ``E`` if smaller than 3.
        train_routing: routing in training mode, one of :data:`ROUTINGS`. Default ``"soft"``.
        eval_routing: routing in eval mode. Default ``"topk"``.
        router_bias: a bias in the router. Default False.

    Shapes: ``forward(x: [..., in_features]) -> [..., out_features]``, like ``base``.
    """

    def __init__(
        self,
        base: nn.Linear,
        n_experts: int,
        lora_config=None,
        top_k: int | None = None,
        train_routing: str = "soft",
        eval_routing: str = "topk",
        router_bias: bool = False,
    ) -> None:
        super().__init__()
        from peft.tuners.lora.layer import Linear as PeftLoraLinear

        if not isinstance(base, nn.Linear):
            raise TypeError(f"base: expected an nn.Linear, got {type(base).__name__}")
        if not isinstance(n_experts, int) or isinstance(n_experts, bool) or n_experts < 1:
            raise ValueError(f"n_experts: expected an int >= 1, got {n_experts!r}")
        top_k = min(3, n_experts) if top_k is None else top_k
        check_top_k(top_k, n_experts)
        for name, value in (("train_routing", train_routing), ("eval_routing", eval_routing)):
            if value not in ROUTINGS:
                raise ValueError(f"{name}: expected one of {ROUTINGS}, got {value!r}")
        cfg = lora_config if lora_config is not None else _default_lora_config()
        names = [expert_name(i) for i in range(n_experts)]
        self.lora = PeftLoraLinear(base, names[0], config=cfg, r=cfg.r, lora_alpha=cfg.lora_alpha)
        for name in names[1:]:
            self.lora.update_layer(name, cfg.r, cfg.lora_alpha, config=cfg)
        # peft trains only its active adapters: every expert is active here (the router mixes them)
        self.lora.set_adapter(names)
        self.router = nn.Linear(base.in_features, n_experts, bias=router_bias).to(
            device=base.weight.device, dtype=base.weight.dtype
        )
        nn.init.normal_(self.router.weight, std=base.in_features**-0.5)
        self.n_experts, self.top_k = n_experts, top_k
        self.train_routing, self.eval_routing = train_routing, eval_routing
        self.last_routing: MixerRouting | None = None

    @classmethod
    def from_linear(cls, module: nn.Linear, n_experts: int, lora_config=None, **kwargs) -> LoRAMixerLinear:
        """Wrap ``module`` (see the class docstring for the arguments)."""
        return cls(module, n_experts, lora_config, **kwargs)

    @property
    def base_layer(self) -> nn.Linear:
        return self.lora.base_layer

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The frozen base weight ``[out_features, in_features]`` (as ``nn.Linear.weight``)."""
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    @property
    def expert_names(self) -> list[str]:
        return [expert_name(i) for i in range(self.n_experts)]

    def expert_parameters(self) -> list[nn.Parameter]:
        """The LoRA parameters of every expert (A, B and a LoRA bias if configured)."""
        out = []
        for name in self.expert_names:
            out += list(self.lora.lora_A[name].parameters()) + list(self.lora.lora_B[name].parameters())
        return out

    def expert_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every expert's update ``Delta_e x``: ``[..., in] -> [..., E, out]``."""
        outs = []
        for name in self.expert_names:
            a, b = self.lora.lora_A[name], self.lora.lora_B[name]
            h = self.lora.lora_dropout[name](x).to(a.weight.dtype)
            outs.append(b(a(h)) * self.lora.scaling[name])
        return torch.stack(outs, dim=-2)

    def route(self, x: torch.Tensor, mode: str | None = None) -> MixerRouting:
        """The router's probabilities, top-k experts and mixing weights for ``x: [..., in]``.

        ``mode`` (one of :data:`ROUTINGS`) defaults to ``train_routing`` in training mode and
        ``eval_routing`` in eval mode.
        """
        if mode is None:
            mode = self.train_routing if self.training else self.eval_routing
        if mode not in ROUTINGS:
            raise ValueError(f"mode: expected one of {ROUTINGS}, got {mode!r}")
        probs = self.router(x.to(self.router.weight.dtype)).softmax(-1)
        top, indices = probs.topk(self.top_k, dim=-1)
        hard = torch.zeros_like(probs).scatter(-1, indices, top / top.sum(-1, keepdim=True))
        if mode == "soft":
            weights = probs
        elif mode == "topk":
            weights = hard
        else:  # forward: the hard weights; backward: the gradient of the soft probabilities
            weights = hard.detach() + probs - probs.detach()
        return MixerRouting(probs, indices, weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected last dim in_features={self.in_features}, got {tuple(x.shape)}")
        routing = self.route(x)
        self.last_routing = routing
        y = self.base_layer(x)
        mixed = (routing.weights.unsqueeze(-1).to(y.dtype) * self.expert_outputs(x).to(y.dtype)).sum(-2)
        return y + mixed

    def load_expert_(self, index: int, lora_A: torch.Tensor, lora_B: torch.Tensor) -> None:
        """Copy a trained LoRA (``A: [r, in]``, ``B: [out, r]``, e.g. from a peft adapter) into expert ``index``."""
        if not 0 <= index < self.n_experts:
            raise ValueError(f"index: expected an expert in [0, {self.n_experts}), got {index}")
        name = self.expert_names[index]
        a, b = self.lora.lora_A[name].weight, self.lora.lora_B[name].weight
        if tuple(lora_A.shape) != tuple(a.shape) or tuple(lora_B.shape) != tuple(b.shape):
            raise ValueError(
                f"lora_A/lora_B: expert {index} needs shapes {tuple(a.shape)} and {tuple(b.shape)}, got "
                f"{tuple(lora_A.shape)} and {tuple(lora_B.shape)}"
            )
        with torch.no_grad():
            a.copy_(lora_A)
            b.copy_(lora_B)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, n_experts={self.n_experts}, "
            f"top_k={self.top_k}, train_routing={self.train_routing!r}, eval_routing={self.eval_routing!r}"
        )


def check_top_k(top_k: int, n_experts: int) -> None:
    """ValueError unless ``1 <= top_k <= n_experts``."""
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= n_experts:
        raise ValueError(f"top_k: expected an int in [1, n_experts = {n_experts}], got {top_k!r}")


def routing_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the router distributions ``probs: [..., E]``."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()


def expert_load(indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Fraction ``fbar: [E]`` of top-k routing slots given to each expert (sums to 1)."""
    counts = torch.bincount(indices.reshape(-1), minlength=n_experts).to(torch.float32)
    return counts / indices.numel()


def specialization_balance_loss(
    probs: torch.Tensor,
    indices: torch.Tensor,
    alpha: float = 1.0,
    lam: float = 0.1,
    entropy_sign: int = 1,
) -> torch.Tensor:
    """LoRA-Mixer's RSL (v1: SBL): ``alpha sum_i pbar_i fbar_i + entropy_sign * lam * mean H(p)``.

    Args:
        probs: ``[..., E]`` router probabilities (carry the gradient).
        indices: ``[..., top_k]`` top-k choices (``fbar`` is their share per expert, no gradient).
        alpha, lam: weights of the balance and entropy terms (>= 0).
        entropy_sign: +1 minimises the routing entropy (peaked routing; our default), -1 maximises
            it (the formula as printed in the paper).

    Returns:
        A scalar tensor.
    """
    if entropy_sign not in (1, -1):
        raise ValueError(f"entropy_sign: expected +1 or -1, got {entropy_sign!r}")
    if alpha < 0 or lam < 0:
        raise ValueError(f"alpha/lam: expected weights >= 0, got alpha={alpha}, lam={lam}")
    E = probs.shape[-1]
    pbar = probs.reshape(-1, E).mean(0)
    fbar = expert_load(indices, E).to(probs.dtype)
    return alpha * (pbar * fbar).sum() + entropy_sign * lam * routing_entropy(probs)


def expert_preservation_loss(
    module: nn.Module, reference: Mapping[str, torch.Tensor], beta: float = 1.0
) -> torch.Tensor:
    """``beta sum ||theta - theta^0||^2`` over the LoRA expert parameters of ``module``.

    ``reference`` maps parameter names (as in ``module.named_parameters()``) to their starting
    values, e.g. ``expert_state(module)`` taken before training; names not in it are skipped.
    """
    total = None
    for name, p in module.named_parameters():
        if name in reference and (".lora_A." in name or ".lora_B." in name):
            term = (p - reference[name].to(p)).pow(2).sum()
            total = term if total is None else total + term
    if total is None:
        raise ValueError("reference: names none of the module's LoRA expert parameters")
    return beta * total


def expert_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of every LoRA expert parameter of ``module`` (the ``theta^0`` of preservation)."""
    return {
        name: p.detach().clone()
        for name, p in module.named_parameters()
        if ".lora_A." in name or ".lora_B." in name
    }


declare_paper(
    arxiv="2507.00029",
    short="LoRA-Mixer",
    title="LoRA-Mixer: Coordinate Modular LoRA Experts Through Serial Attention Routing",
    authors="Li, Song, Zhou, Zhang, Yu, Yang",
    venue="ICLR 2026",
    area=LAYERS,
    status="implemented",
    objects=(
        "linearlab.layers.linear.lora_mixer.LoRAMixerLinear",
        "linearlab.layers.linear.lora_mixer.specialization_balance_loss",
        "linearlab.layers.linear.lora_mixer.expert_preservation_loss",
        "linearlab.convert.lora_mixer.apply_lora_mixer_",
        "linearlab.convert.lora_mixer.LoRAMixerConfig",
    ),
    recipes=("lora-mixer",),
    usage=(
        "from linearlab.convert.lora_mixer import LoRAMixerConfig, apply_lora_mixer_\n"
        'apply_lora_mixer_(model, LoRAMixerConfig(n_experts=4, top_k=2, target_modules=["qkv_proj", "o_proj"]))'
    ),
    claim=(
        "Beats routing and LoRA-MoE baselines on 15 benchmarks with 48% of their trainable parameters, "
        "e.g. +3.79 GSM8K, +2.90 CoLA, +3.95 ARC-C (abstract, v2); v1: +7.61 GSM8K, +4.88 HumanEval, "
        "+3.08 MedQA over the base model."
    ),
    note=(
        "No official code: the hard-soft top-k is read as straight-through, and the entropy term of the "
        "balance loss minimises entropy by default (the printed sign maximises it; entropy_sign=-1)."
    ),
)
