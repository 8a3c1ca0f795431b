"""Papers of the project's seed list that linearlab does not implement yet.

Each is declared with ``status="planned"``, no objects and no recipe, and a one-line ``note`` that
says so and sketches the laptop-scale version the research notes propose. When a paper gets code,
move its declaration next to that code (and give it objects, usage and a recipe).
"""

from __future__ import annotations

from linearlab.papers import ANALYSIS, LAYERS, MIXERS, OTHER, declare_paper

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
    arxiv="2410.14670",
    short="SAE dark matter",
    title="Decomposing The Dark Matter of Sparse Autoencoders",
    authors="Engels, Riggs, Tegmark",
    venue="TMLR 2025",
    area=ANALYSIS,
    status="planned",
    claim="About half of a sparse autoencoder's error vector, and over 90% of its norm, is linearly "
    "predictable from the input activation (abstract).",
    note="Not implemented yet. Plan: a TopK sparse autoencoder on synthetic sparse features and a linear "
    "regression of its error from the input.",
)

declare_paper(
    arxiv="2505.13898",
    short="Depth efficiency",
    title="Do Language Models Use Their Depth Efficiently?",
    authors="Csordás, Manning, Potts",
    venue="NeurIPS 2025",
    area=ANALYSIS,
    status="planned",
    claim="In Llama 3.1, Qwen 3 and OLMo 2 the second half of the layers contributes much less and can be "
    "skipped with little effect; deeper models spread the same computation over more layers (abstract).",
    note="Not implemented yet. Plan: residual-contribution and layer-skipping measures on shallow and "
    "deep byte-level LMs, with linear maps between their residual streams.",
)

declare_paper(
    arxiv="2312.16291",
    short="Observable Propagation",
    title="Observable Propagation: A Data-Efficient Approach to Uncover Feature Vectors in Transformers",
    authors="Dunefsky, Cohan",
    area=ANALYSIS,
    status="planned",
    claim="Propagating a linear functional of the logits backwards through a path gives that path's "
    "feature vector without data; coupling coefficients predict how two observables co-move (abstract).",
    note="Not implemented yet. Plan: feature vectors of a 2-layer attention-only toy model, compared with "
    "gradients (cosine 1 expected).",
)

declare_paper(
    arxiv="2503.14043",
    short="LLM output signatures",
    title="Learning on LLM Output Signatures for gray-box LLM Behavior Analysis",
    authors="Bar-Shalom, Frasca, Lim, Gelberg, Ziser, El-Yaniv, Chechik, Maron",
    area=ANALYSIS,
    status="planned",
    claim="A transformer over the sequence of output distributions (LOS-Net) beats gray-box baselines at "
    "hallucination and data-contamination detection and transfers across datasets and LLMs (abstract).",
    note="Not implemented yet. Plan: LOS-Net on the output signatures of a toy LM for membership "
    "detection, against perplexity and Min-K% scores.",
)

declare_paper(
    arxiv="2502.11779",
    short="Response-strategy selection",
    title="Efficient Response Generation Method Selection for Fine-Tuning Large Language Models",
    authors="Ren, Chen, Liu",
    area=ANALYSIS,
    status="planned",
    claim="Scoring a small sample from each response-generation strategy by how familiar it is to the "
    "target model predicts fine-tuned performance better than perplexity (abstract).",
    note="Not implemented yet. Plan: a synthetic strategy-selection benchmark comparing the alignment "
    "score with perplexity by rank correlation.",
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

declare_paper(
    arxiv="2605.03258",
    short="Counting readout bottleneck",
    title="The Right Answer, the Wrong Direction: Why Transformers Fail at Counting and How to Fix It",
    authors="Garcia",
    area=ANALYSIS,
    status="planned",
    claim="Probes recover the count with R^2 > 0.99, yet its directions are nearly orthogonal to the "
    "digit rows of the output head (|cos| <= 0.032); LoRA on attention Q/V reaches 83.1% greedy "
    "accuracy (abstract).",
    note="Not implemented yet. Plan: probes and head-row geometry on a tiny counting LM, then the "
    "head-only and LoRA repairs.",
)
