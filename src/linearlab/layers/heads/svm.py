"""L2-SVM output layer: a linear head trained with the one-vs-rest squared hinge loss.

Agarap, "A Neural Network Architecture Combining Gated Recurrent Unit (GRU) and Support Vector
Machine (SVM) for Intrusion Detection in Network Traffic Data", ICMLC 2018 (arXiv 1709.03082),
after Tang, "Deep Learning using Linear Support Vector Machines" (2013).

A drop-in for ``nn.Linear(d, C)`` + softmax cross-entropy: the head is the same linear map, the
scores ``o = W h + b`` are read as ``C`` one-vs-rest SVM margins, and training minimises

    L = 1/2 ||W||_F^2 + C_svm * sum_batch sum_c max(0, 1 - y_c o_c)^2,   y_c = +1 for the true class, -1 else

(the paper sums over the batch and regularises ``W`` only; ``reduction="mean"`` averages over the
batch instead, which keeps the learning rate comparable with cross-entropy). The prediction is
``argmax_c o_c`` (the paper's repository takes ``argmax(sign(o))``, which ties whenever several
scores share a sign). Unlike :class:`torch.nn.MultiMarginLoss` (the Weston-Watkins hinge, which
compares ``o_y`` with every ``o_j``) each class here is its own binary SVM, as in scikit-learn's
``LinearSVC(loss="squared_hinge", multi_class="ovr")``.

Example::

    head = SVMHead(64, num_classes=5)
    scores = head(h)                                             # h: [B, 64] -> [B, 5]
    loss = squared_hinge_loss(scores, target, C=0.5, weight=head.weight)
"""

from __future__ import annotations

import torch
from torch import nn

from linearlab.papers import LAYERS, declare_paper

REDUCTIONS = ("mean", "sum")


def svm_targets(target: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-vs-rest labels ``[..., C]`` in ``{-1, +1}`` from class ids ``target: [...]``."""
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise TypeError(f"target: expected integer class ids, got dtype {target.dtype}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(
            f"target: class ids must be in [0, {num_classes}), got values in "
            f"[{int(target.min())}, {int(target.max())}]"
        )
    y = torch.full((*target.shape, num_classes), -1.0, dtype=dtype, device=target.device)
    return y.scatter_(-1, target.unsqueeze(-1).long(), 1.0)


def squared_hinge_loss(
    scores: torch.Tensor,
    target: torch.Tensor,
    C: float = 1.0,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """One-vs-rest L2-SVM loss ``1/2 ||weight||^2 + C * reduce_batch sum_c max(0, 1 - y_c s_c)^2``.

    Args:
        scores: ``[..., num_classes]`` head outputs ``s``.
        target: ``[...]`` integer class ids.
        C: weight of the hinge term (> 0; the paper uses 0.5).
        weight: the head's weight matrix to regularise with ``1/2 ||W||_F^2`` (None: no penalty).
        reduction: ``"sum"`` over the batch (the paper's loss) or ``"mean"`` over it.

    Returns:
        A scalar tensor.
    """
    if scores.dim() < 1 or tuple(scores.shape[:-1]) != tuple(target.shape):
        raise ValueError(
            f"scores/target: expected scores [..., C] and target [...] with the same leading shape, got "
            f"{tuple(scores.shape)} and {tuple(target.shape)}"
        )
    if not C > 0:
        raise ValueError(f"C: must be > 0, got {C!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    y = svm_targets(target, scores.shape[-1], scores.dtype)
    per_example = torch.clamp(1 - y * scores, min=0).pow(2).sum(-1)
    hinge = per_example.sum() if reduction == "sum" else per_example.mean()
    loss = C * hinge
    if weight is not None:
        loss = loss + 0.5 * weight.pow(2).sum()
    return loss


class SVMHead(nn.Linear):
    """A linear layer whose outputs are one-vs-rest SVM scores (train with :func:`squared_hinge_loss`).

    It is an ``nn.Linear`` (same parameters, state_dict and shapes: ``[..., in_features] ->
    [..., num_classes]``) initialised as in the paper: weight ``N(0, init_std^2)`` (0.01), bias
    ``init_bias`` (0.1). :meth:`predict` is ``argmax`` over the scores; :meth:`loss` is the squared
    hinge with this head's weight regularised.

    Args:
        in_features: feature width ``D``.
        num_classes: number of classes ``C``.
        bias: learn a bias (not regularised). Default True.
        init_std, init_bias: the paper's initialisation (0.01 and 0.1).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        bias: bool = True,
        init_std: float = 0.01,
        init_bias: float = 0.1,
    ) -> None:
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"num_classes: expected an int >= 2, got {num_classes!r}")
        super().__init__(in_features, num_classes, bias=bias)
        with torch.no_grad():
            self.weight.normal_(0.0, init_std)
            if self.bias is not None:
                self.bias.fill_(init_bias)

    @property
    def num_classes(self) -> int:
        return self.out_features

    def predict(self, h: torch.Tensor) -> torch.Tensor:
        """Class ids ``[...]``: the largest score of ``self(h)``."""
        return self(h).argmax(-1)

    def loss(
        self, scores: torch.Tensor, target: torch.Tensor, C: float = 1.0, reduction: str = "mean"
    ) -> torch.Tensor:
        """:func:`squared_hinge_loss` with ``1/2 ||self.weight||^2``."""
        return squared_hinge_loss(scores, target, C=C, weight=self.weight, reduction=reduction)


declare_paper(
    arxiv="1709.03082",
    short="GRU-SVM",
    title=(
        "A Neural Network Architecture Combining Gated Recurrent Unit (GRU) and Support Vector "
        "Machine (SVM) for Intrusion Detection in Network Traffic Data"
    ),
    authors="Agarap",
    venue="ICMLC 2018",
    area=LAYERS,
    status="implemented",
    objects=(
        "linearlab.layers.heads.svm.SVMHead",
        "linearlab.layers.heads.svm.squared_hinge_loss",
    ),
    recipes=("svm-head",),
    usage=(
        "from linearlab.layers.heads.svm import SVMHead, squared_hinge_loss\n"
        "head = SVMHead(64, 5); loss = squared_hinge_loss(head(x), torch.randint(5, (2, 32)), C=0.5, weight=head.weight)"
    ),
    claim=(
        "On the Kyoto 2013 honeypot data, GRU-SVM reaches about 84.15% test accuracy (81.54% train) against "
        "70.75% (63.07%) for GRU-Softmax, and trains and tests faster (README and abstract)."
    ),
    note=(
        "The Kyoto data set is not available offline; the recipe compares the two heads on scikit-learn's "
        "bundled digits read as row sequences, with each head's learning rate tuned."
    ),
)
