"""Papers of the project's seed list that linearlab does not implement yet.

Each is declared with ``status="planned"``, no objects and no recipe, and a one-line ``note`` that
says so and sketches the laptop-scale version the research notes propose. When a paper gets code,
move its declaration next to that code (and give it objects, usage and a recipe).
"""

from __future__ import annotations

from linearlab.papers import LAYERS, declare_paper

declare_paper(
    arxiv="2504.19449",
    short="R-Sparse",
    title="R-Sparse: Rank-Aware Activation Sparsity for Efficient LLM Inference",
    authors="Zhang, Liu, Tian, Khaitan, Wang, Li",
    venue="ICLR 2025",
    area=LAYERS,
    status="planned",
    claim="Comparable accuracy at 50% model-level sparsity on Llama-2/3 and Mistral across ten tasks, "
    "43% faster end to end with custom kernels (abstract).",
    note="Not implemented yet. Plan: a drop-in nn.Linear replacement (sparse input channels plus a "
    "low-rank SVD residual), checked against the dense layer on a small trained LM.",
)

declare_paper(
    arxiv="2505.10202",
    short="VQ-Logits",
    title="VQ-Logits: Compressing the Output Bottleneck of Large Language Models via Vector Quantized Logits",
    authors="Shao, Huang, Wu, Cheng, Wu, Shan, Zheng",
    area=LAYERS,
    status="planned",
    claim="Up to 99% fewer output-layer parameters and 6x faster logits at only +4% perplexity on "
    "WikiText-103 and C4 (abstract).",
    note="Not implemented yet. Plan: a vector-quantised output head (codebook + token-to-code map) for "
    "MixerLM, compared with the full head on a small byte- or word-level LM.",
)

declare_paper(
    arxiv="2411.12992",
    short="MemoryFormer",
    title="MemoryFormer: Minimize Transformer Computation by Removing Fully-Connected Layers",
    authors="Ding, Tang, Qin, Zhou, Xu, Li, Han, Liao, Wang",
    venue="NeurIPS 2024",
    area=LAYERS,
    status="planned",
    claim="Hash-table memory layers replace the fully-connected layers and match or beat Pythia baselines "
    "at lower FLOPs per block (third-party summaries; tables not verified).",
    note="Not implemented yet. Plan: a hashed memory layer in place of the FFN of a small byte-level LM, "
    "bits per byte and FLOPs per token.",
)
