"""LLM Output Signatures (Bar-Shalom et al., arXiv 2503.14043): learning on a model's token probabilities.

The *output signature* (LOS) of a scored text is, at every position, the model's next-token
distribution (kept as its ``top_k`` sorted probabilities) and the probability of the token that
actually came (ATP). Gray-box baselines reduce it to one number per text: mean log-probability
(perplexity), Min-K% (mean of the lowest K% token log-probabilities), mean entropy, and the zlib
ratio (log-likelihood over compressed length). :class:`LOSNet` is a small transformer encoder over
the per-position signature with mean pooling and a logistic output, trained through the one
training loop; :func:`auroc` scores any of them.

Example:
    >>> sig = output_signature(model, ids, top_k=32)      # ids: [N, T]
    >>> feats = sig.features()                            # [N, T-1, top_k + 2]
    >>> auroc(-sig.mean_log_prob(), labels)
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from linearlab.analysis.hooks import logits_of
from linearlab.papers import ANALYSIS, declare_paper
from linearlab.runs import RunDir
from linearlab.train import TrainConfig, train


@dataclass(frozen=True)
class OutputSignature:
    """Per scored position (``P = T - 1``): ``topk: [N, P, k]`` sorted probabilities (descending),
    ``atp: [N, P]`` probability of the actual next token, ``entropy: [N, P]`` (nats)."""

    topk: torch.Tensor
    atp: torch.Tensor
    entropy: torch.Tensor

    def features(self) -> torch.Tensor:
        """LOS-Net input ``[N, P, k + 2]``: sorted top-k probabilities, ATP and ``log ATP / 10``."""
        log_atp = self.atp.clamp_min(1e-30).log() / 10
        return torch.cat([self.topk, self.atp.unsqueeze(-1), log_atp.unsqueeze(-1)], dim=-1).float()

    def mean_log_prob(self) -> torch.Tensor:
        """``[N]`` mean log-probability of the actual tokens (minus the log-perplexity)."""
        return self.atp.clamp_min(1e-30).log().mean(-1)

    def min_k_percent(self, k: float = 0.2) -> torch.Tensor:
        """``[N]`` mean of the lowest ``k`` fraction of token log-probabilities (Min-K%)."""
        if not 0 < k <= 1:
            raise ValueError(f"k: expected a fraction in (0, 1], got {k}")
        logp = self.atp.clamp_min(1e-30).log()
        m = max(1, int(round(k * logp.shape[-1])))
        return logp.topk(m, dim=-1, largest=False).values.mean(-1)

    def mean_entropy(self) -> torch.Tensor:
        """``[N]`` mean entropy of the next-token distributions."""
        return self.entropy.mean(-1)


@torch.no_grad()
def output_signature(
    model: nn.Module, input_ids: torch.Tensor, top_k: int = 32, batch_size: int = 16
) -> OutputSignature:
    """Score ``input_ids: [N, T]`` with a causal LM and keep its output signature (see the class)."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.shape[1] < 2:
        raise ValueError(
            f"input_ids: expected [N, T] token ids with T >= 2, got {getattr(input_ids, 'shape', input_ids)!r}"
        )
    tops, atps, ents = [], [], []
    for part in input_ids.split(batch_size):
        logits = logits_of(model(part)).double()[:, :-1]
        if not 1 <= top_k <= logits.shape[-1]:
            raise ValueError(f"top_k: expected 1 <= top_k <= vocabulary size {logits.shape[-1]}, got {top_k}")
        logp = F.log_softmax(logits, dim=-1)
        p = logp.exp()
        tops.append(p.topk(top_k, dim=-1).values)
        atps.append(p.gather(-1, part[:, 1:].unsqueeze(-1)).squeeze(-1))
        ents.append(-(p * logp).sum(-1))
    return OutputSignature(torch.cat(tops), torch.cat(atps), torch.cat(ents))


def zlib_ratio(input_ids: torch.Tensor, sig: OutputSignature) -> torch.Tensor:
    """``[N]`` mean log-probability over the zlib-compressed size (bytes) of each byte-token text."""
    sizes = torch.tensor(
        [len(zlib.compress(bytes(row.clamp(0, 255).to(torch.uint8).tolist()))) for row in input_ids],
        dtype=torch.float64,
    )
    return sig.atp.clamp_min(1e-30).log().sum(-1) / sizes


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores: [N]`` for binary ``labels: [N]`` (1 = positive), ties
    counted as one half (the Mann-Whitney U statistic)."""
    scores, labels = scores.double().flatten(), labels.flatten()
    if scores.shape != labels.shape:
        raise ValueError(
            f"scores, labels: expected the same length, got {scores.numel()} and {labels.numel()}"
        )
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0 or len(pos) + len(neg) != len(labels):
        raise ValueError("labels: expected both classes, 0 and 1 only")
    greater = (pos.unsqueeze(1) > neg.unsqueeze(0)).double().sum()
    ties = (pos.unsqueeze(1) == neg.unsqueeze(0)).double().sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


class LOSNet(nn.Module):
    """A transformer encoder over output signatures: ``[N, P, F] -> [N]`` logits.

    Per-position linear embedding plus a learned position embedding, ``layers`` pre-norm encoder
    layers, mean pooling over positions and a linear output.
    """

    def __init__(
        self, in_features: int, max_len: int, d_model: int = 32, layers: int = 2, heads: int = 4
    ) -> None:
        super().__init__()
        self.in_features, self.max_len = in_features, max_len
        self.embed = nn.Linear(in_features, d_model)
        self.pos = nn.Parameter(torch.zeros(max_len, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, heads, 2 * d_model, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(d_model, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.in_features or x.shape[1] > self.max_len:
            raise ValueError(
                f"x: expected [N, P <= {self.max_len}, {self.in_features}] signature features, got {tuple(x.shape)}"
            )
        h = self.encoder(self.embed(x) + self.pos[: x.shape[1]])
        return self.out(h.mean(1)).squeeze(-1)


def train_los_net(
    features: torch.Tensor,
    labels: torch.Tensor,
    steps: int = 300,
    lr: float = 1e-3,
    batch_size: int = 64,
    d_model: int = 32,
    seed: int = 0,
    run_dir: RunDir | None = None,
) -> LOSNet:
    """Train a :class:`LOSNet` on ``features: [N, P, F]`` with binary ``labels: [N]`` (logistic loss)."""
    if features.dim() != 3 or labels.shape != (features.shape[0],):
        raise ValueError(
            f"features, labels: expected [N, P, F] and [N], got {tuple(features.shape)}, {tuple(labels.shape)}"
        )
    torch.manual_seed(seed)
    net = LOSNet(features.shape[-1], features.shape[1], d_model=d_model)
    x, y = features.float(), labels.float()
    n = x.shape[0]

    def batch_fn(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(0, n, (min(batch_size, n),), generator=g)
        return x[idx], y[idx]

    def loss_fn(m: LOSNet, batch):
        xb, yb = batch
        return F.binary_cross_entropy_with_logits(m(xb), yb), {}

    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=min(30, steps // 10), weight_decay=0.01,
                      checkpoint_every=steps if run_dir is not None else 0, log_every=max(1, steps // 10),
                      seed=seed, progress=False)  # fmt: skip
    train(net, batch_fn, loss_fn, cfg, run_dir=run_dir, resume=True, desc="LOS-Net")
    return net.eval()


declare_paper(
    arxiv="2503.14043",
    short="LLM output signatures",
    title="Learning on LLM Output Signatures for gray-box LLM Behavior Analysis",
    authors="Bar-Shalom, Frasca, Lim, Gelberg, Ziser, El-Yaniv, Chechik, Maron",
    area=ANALYSIS,
    status="partial",
    objects=(
        "linearlab.analysis.output_signatures.output_signature",
        "linearlab.analysis.output_signatures.LOSNet",
        "linearlab.analysis.output_signatures.train_los_net",
        "linearlab.analysis.output_signatures.auroc",
    ),
    recipes=("output-signatures",),
    usage=(
        "from linearlab.analysis.output_signatures import output_signature\n"
        "sig = output_signature(model.eval(), torch.randint(0, 256, (4, 32)), top_k=16); feats = sig.features()  # [4, 31, 18]"
    ),
    claim=(
        "A transformer over the output signature (top-k token distributions and actual-token "
        "probabilities) beats gray-box baselines such as perplexity and Min-K% at hallucination and "
        "data-contamination detection, and transfers across datasets and LLMs (abstract)."
    ),
    note="Membership (contamination) detection on a byte-level test-bed LM only; hallucination detection "
    "and cross-model transfer are not reproduced.",
)
