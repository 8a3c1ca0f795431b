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
    arxiv="2401.13875",
    short="Temperature in softmax Gaussian MoE",
    title="Is Temperature Sample Efficient for Softmax Gaussian Mixture of Experts?",
    authors="Nguyen, Akbarian, Ho",
    venue="ICML 2024",
    area=LAYERS,
    status="planned",
    claim="The usual dense-to-sparse temperature gate estimates experts at O(1/log n) in the worst case; "
    "an activation before the gate restores polynomial rates (abstract; simulations).",
    note="Not implemented yet. Plan: simulate a Gaussian MoE and fit it by maximum likelihood with the "
    "linear and the activation gate, error against sample size.",
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
    arxiv="1709.03082",
    short="GRU-SVM",
    title=(
        "A Neural Network Architecture Combining Gated Recurrent Unit (GRU) and Support Vector "
        "Machine (SVM) for Intrusion Detection in Network Traffic Data"
    ),
    authors="Agarap",
    venue="ICMLC 2018",
    area=LAYERS,
    status="planned",
    claim="On the Kyoto 2013 honeypot data, GRU-SVM reaches about 84.15% test accuracy against 70.75% "
    "for GRU-Softmax, and is faster (README and abstract).",
    note="Not implemented yet. Plan: an L2-SVM output head with the squared hinge loss, against softmax "
    "with cross-entropy on synthetic sequences with matched training.",
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
    arxiv="2310.19809",
    short="MgNO",
    title="MgNO: Efficient Parameterization of Linear Operators via Multigrid",
    authors="He, Liu, Xu",
    venue="ICLR 2024",
    area=OTHER,
    status="planned",
    claim="Multigrid V-cycles of convolutions as the linear operators of a neural operator: state of "
    "the art on Darcy, Helmholtz, Navier-Stokes and pipe flow with fewer parameters (abstract).",
    note="Not implemented yet. Plan: a 1-D Darcy problem, MgNO against an FNO-style spectral layer and "
    "a CNN at equal parameter budgets.",
)

declare_paper(
    arxiv="2602.20309",
    short="QuantVLA",
    title="QuantVLA: Scale-Calibrated Post-Training Quantization for Vision-Language-Action Models",
    authors="Zhang, Hsieh, Wan, Lin, Wang, Wang, Lei, Zhang",
    venue="CVPR 2026",
    area=LAYERS,
    status="planned",
    claim="On LIBERO with pi0.5 and GR00T N1.5, quantised models exceed full-precision task success with "
    "about 70% memory savings on the quantised parts and a 1.22x end-to-end speed-up (abstract).",
    note="Not implemented yet. Plan: scale-calibrated post-training quantisation of a toy flow-matching "
    "action head, success against bit width.",
)

declare_paper(
    arxiv="2507.00029",
    short="LoRA-Mixer",
    title="LoRA-Mixer: Coordinate Modular LoRA Experts Through Serial Attention Routing",
    authors="Li, Song, Zhou, Zhang, Yu, Yang",
    venue="ICLR 2026",
    area=LAYERS,
    status="planned",
    claim="Beats routing and LoRA-MoE baselines on 15 benchmarks with 48% of their trainable parameters, "
    "e.g. +3.79 GSM8K, +2.90 CoLA, +3.95 ARC-C (abstract, v2).",
    note="Not implemented yet. Plan: routed LoRA experts inside the attention projections of a tiny "
    "transformer, on a mixture of synthetic tasks.",
)

declare_paper(
    arxiv="2406.17245",
    short="MIGU",
    title="Unlocking Continual Learning Abilities in Language Models",
    authors="Du, Cheng, Luo, Qiu, Huang, Cheung, Cheng, Fu",
    venue="EMNLP 2024 Findings",
    area=LAYERS,
    status="planned",
    claim="Masking the gradient of the linear layers' smallest-magnitude outputs gives +15.2% average "
    "accuracy over PEFT baselines on a 15-task continual-learning benchmark (abstract).",
    note="Not implemented yet. Plan: sequential fine-tuning of a tiny LM on four synthetic tasks, vanilla "
    "against MIGU (top 30% of outputs updated) against a random mask.",
)

declare_paper(
    arxiv="2305.07952",
    short="APNet",
    title=(
        "APNet: An All-Frame-Level Neural Vocoder Incorporating Direct Prediction of Amplitude and "
        "Phase Spectra"
    ),
    authors="Ai, Ling",
    area=OTHER,
    status="planned",
    claim="Predicting amplitude and phase spectra at frame level (phase from two parallel linear convs "
    "and atan2) makes a vocoder about 8x faster than HiFi-GAN v1 (README and abstract).",
    note="Not implemented yet. Plan: the amplitude / phase predictors with anti-wrapping phase losses on "
    "synthetic signals, and a speed comparison at random weights.",
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
    arxiv="2603.14925",
    short="Workflow-aware layer decomposition",
    title="Workflow-Aware Structured Layer Decomposition for Illustration Production",
    authors="Zhang, Li, Sawada, Xie",
    area=OTHER,
    status="planned",
    claim="Decomposes anime illustrations into production layers (line art, flat colour, shadow, "
    "highlight) with layer-semantic embeddings, trained on synthetic workflow data (abstract).",
    note="Not implemented yet (a diffusion-model paper): the CPU-testable part planned is its blend "
    "modes and layer compositing, with property tests.",
)

declare_paper(
    arxiv="2411.17864",
    short="LayerDecomp",
    title="Generative Image Layer Decomposition with Visual Effects",
    authors="Yang et al.",
    venue="CVPR 2025",
    area=OTHER,
    status="planned",
    claim="A diffusion transformer splits an image into a clean background and an RGBA foreground with "
    "its shadows and reflections, helped by a recomposition consistency loss (abstract).",
    note="Not implemented yet (a diffusion-model paper): planned are the over operator, the recomposition "
    "loss and a tiny U-Net on procedural layered images.",
)

declare_paper(
    arxiv="2602.06665",
    short="Selective layer restoration",
    title="Not All Layers Need Tuning: Selective Layer Restoration Recovers Diversity",
    authors="Zhang, Wang, Soh",
    area=LAYERS,
    status="planned",
    claim="Restoring selected layers of a post-trained model to their base weights recovers output "
    "diversity while keeping quality, training-free (abstract).",
    note="Not implemented yet. Plan: a restore_layers_ surgery on a tiny base / fine-tuned LM pair, "
    "diversity and quality per restored interval.",
)

declare_paper(
    arxiv="2505.22523",
    short="PrismLayers",
    title="PrismLayers: Open Data for High-Quality Multi-Layer Transparent Image Generative Models",
    authors="Chen et al.",
    area=OTHER,
    status="planned",
    claim="Releases multi-layer transparent image datasets with accurate alpha mattes and a training-free "
    "synthesis pipeline (abstract).",
    note="Not implemented yet (a dataset paper needing downloads): planned are its layer format and "
    "metrics on procedural data.",
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
    arxiv="2601.15507",
    short="LASAGNA",
    title="Controllable Layered Image Generation for Real-World Editing",
    authors="Yang et al.",
    area=OTHER,
    status="planned",
    claim="Generates the composite, background and foreground-with-effects layers jointly, so edits "
    "become alpha compositing (abstract).",
    note="Not implemented yet (a diffusion-model paper): planned are compositing edits and recomposition "
    "metrics on procedural data.",
)

declare_paper(
    arxiv="2406.17415",
    short="Layer-wise quantization",
    title=(
        "Layer-Wise Quantization: A Pragmatic and Effective Method for Quantizing LLMs Beyond Integer "
        "Bit-Levels"
    ),
    authors="Dumitru, Yadav, Maheshwary, Clotan, Madhusudhan, Surdeanu",
    area=LAYERS,
    status="planned",
    claim="Ordering layers by importance (LIM or ZD scores) keeps quality close to the original until "
    "25-50% of the layers move to lower bits, against 5-10% without an ordering (abstract).",
    note="Not implemented yet. Plan: LIM and ZD layer scores on a small trained LM driving per-layer bit "
    "widths (torchao), quality against the share of low-bit layers.",
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
