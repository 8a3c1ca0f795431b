"""Recipe ``linearize``: make a pretrained Hugging Face Llama linear-time with T2R, Hedgehog and LoLCATs.

No pretrained weights can be downloaded here, so by default the recipe first trains its own
teacher, a small ``LlamaForCausalLM`` with grouped-query attention, on the standard library's
bytes (cached in the run directory); ``--teacher DIR`` takes any local Llama / Mistral / Qwen2
checkpoint folder instead (its ``tokenizer.json``, if present, tokenises the corpus).

For every method the same teacher is loaded, linearised (:func:`linearlab.convert.linearize_`),
then trained in LoLCATs' two stages: attention transfer (:func:`~linearlab.convert.distill_attention`,
only feature maps and window factors) and LoRA fine-tuning
(:func:`~linearlab.convert.finetune_lora`, rank 8 on q/k/v/o, merged). Two reference rows show
what each stage buys: ``elu1`` (the parameter-free Katharopoulos map, no attention transfer
possible; scored right after the swap) and ``lolcats_lora_only`` (LoLCATs' operator, LoRA without attention transfer).
``still`` (STILL: salient tokens keep softmax attention) trains in both stages; ``liger`` and
``liger_gdn`` (Liger) add no parameters and train in one stage, LoRA only.

The table: validation bits/byte of the teacher, and of each method right after the swap, after
stage 1 and after stage 2; the fraction of the teacher gap closed; trainable parameters (% of
the model) and tokens per stage; the attention-weight cross-entropy against the teacher after
stage 1; decode ms/token and state bytes at a long context against the teacher's KV cache.

    linearlab run linearize [--smoke] [--teacher DIR] [--methods t2r,hedgehog,lolcats] [--set ...]
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from linearlab.config import require_at_least_one
from linearlab.io import atomic_write_json, check_input_path
from linearlab.lab.tables import fmt, format_table
from linearlab.recipes import Flag, Recipe
from linearlab.registry import Registry
from linearlab.runs import RunDir

#: label -> (LinearizeConfig fields, run attention transfer?, run LoRA?)
VARIANTS: Registry[tuple[dict[str, Any], bool, bool]] = Registry("linearize variant", argument="methods")
# elu+1 has no parameters to transfer; it is the reference for the attention cross-entropy
VARIANTS.register("elu1", ({"method": "t2r", "feature_map": "elu1"}, False, False))
VARIANTS.register("t2r", ({"method": "t2r"}, True, True))
VARIANTS.register("hedgehog", ({"method": "hedgehog"}, True, True))
VARIANTS.register("lolcats", ({"method": "lolcats"}, True, True))
VARIANTS.register("lolcats_lora_only", ({"method": "lolcats"}, False, True))
VARIANTS.register("still", ({"method": "still"}, True, True))
VARIANTS.register("liger", ({"method": "liger"}, False, True))
VARIANTS.register("liger_gdn", ({"method": "liger_gdn"}, False, True))
DEFAULT_METHODS = "elu1,t2r,hedgehog,lolcats,lolcats_lora_only,still,liger,liger_gdn"
SUPPORTED_TEACHERS = ("llama", "mistral", "qwen2")

PAPER = (
    "What the papers lead one to expect: LoLCATs (arXiv 2410.10254): attention transfer then LoRA "
    "recovers most of the gap to the teacher while training ~0.2% of the parameters, and attention "
    "transfer before LoRA beats LoRA alone; Hedgehog (arXiv 2402.04347): the Hedgehog map matches "
    "the softmax weights more closely (lower cross-entropy) than T2R and elu+1 and recovers more "
    "quality; Liger (arXiv 2503.01496): recovers about as much as LoLCATs with one cheap stage; STILL "
    "(arXiv 2602.02180): recovers more long-range recall than window-based routing."
)


@dataclass
class LinearizeExperiment:
    """Everything ``linearlab run linearize`` does; override fields with ``--set name=value``."""

    methods: str = DEFAULT_METHODS
    teacher: str = ""  # a local Hugging Face checkpoint folder; empty: train a small Llama here
    # the teacher trained here (ignored with --teacher)
    d_model: int = 128
    n_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    mlp_hidden: int = 384
    teacher_steps: int = 500
    teacher_lr: float = 3e-3
    # data and evaluation
    max_bytes: int = 4_000_000
    seq_len: int = 256
    batch_size: int = 8
    eval_windows: int = 32
    # long-range recall rows mixed into every batch (keys far outside the softmax window)
    recall_share: float = 0.25
    recall_pairs: int = 4
    recall_eval_rows: int = 64
    # linearisation
    window_size: int = 64
    still_budget: int = 32  # STILL: salient tokens kept per head
    still_block: int = 16  # STILL: tokens between selections
    distill_steps: int = 100
    distill_lr: float = 1e-2
    lora_steps: int = 100
    lora_lr: float = 1e-3
    lora_rank: int = 8
    lora_alpha: float = 16.0
    # decoding cost
    decode_context: int = 4096
    decode_tokens: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        require_at_least_one(
            self,
            "d_model",
            "n_layers",
            "num_heads",
            "num_kv_heads",
            "mlp_hidden",
            "teacher_steps",
            "max_bytes",
            "seq_len",
            "batch_size",
            "eval_windows",
            "distill_steps",
            "lora_steps",
            "lora_rank",
            "decode_context",
            "decode_tokens",
            "recall_pairs",
            "recall_eval_rows",
            "still_block",
        )
        if self.window_size < 1 or self.window_size > self.seq_len:
            raise ValueError(f"window_size: must be in [1, seq_len={self.seq_len}], got {self.window_size}")
        if self.d_model % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads, num_kv_heads: need d_model % num_heads == 0 and num_heads % num_kv_heads == 0, "
                f"got d_model={self.d_model}, num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}"
            )
        if self.still_budget < 0:
            raise ValueError(f"still_budget: must be >= 0, got {self.still_budget}")
        if not 0 <= self.recall_share < 1:
            raise ValueError(f"recall_share: must be in [0, 1), got {self.recall_share}")
        if self.recall_share > 0 and self.seq_len - 4 * self.recall_pairs <= self.window_size:
            raise ValueError(
                f"recall_pairs: the answers must lie beyond the window: need seq_len - 4 * recall_pairs "
                f"> window_size, got {self.seq_len} - 4 * {self.recall_pairs} <= {self.window_size}"
            )
        for name in ("teacher_lr", "distill_lr", "lora_lr", "lora_alpha"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        VARIANTS.check(self.methods)


def _smoke() -> LinearizeExperiment:
    return LinearizeExperiment(
        methods="t2r,hedgehog,lolcats",
        d_model=32,
        n_layers=2,
        num_heads=4,
        num_kv_heads=2,
        mlp_hidden=64,
        teacher_steps=30,
        max_bytes=200_000,
        seq_len=64,
        batch_size=4,
        eval_windows=4,
        window_size=16,
        still_budget=4,
        still_block=4,
        distill_steps=8,
        lora_steps=8,
        decode_context=128,
        decode_tokens=4,
        recall_pairs=2,
        recall_eval_rows=8,
    )


# -- data ----------------------------------------------------------------------------------------


@dataclass
class TokenData:
    """Train / validation token ids and the bytes one token stands for (1 for byte-level)."""

    train: torch.Tensor
    val: torch.Tensor
    bytes_per_token: float

    @property
    def byte_level(self) -> bool:
        return self.bytes_per_token == 1.0


def _load_data(exp: LinearizeExperiment) -> TokenData:
    from linearlab.tasks.text import ByteCorpus

    corpus = ByteCorpus.from_files(None, max_bytes=exp.max_bytes)
    tokenizer_file = Path(exp.teacher) / "tokenizer.json" if exp.teacher else None
    if tokenizer_file is None or not tokenizer_file.is_file():
        return TokenData(corpus.train.long(), corpus.val.long(), 1.0)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))

    def encode(data: torch.Tensor) -> torch.Tensor:
        text = bytes(data.tolist()).decode("utf-8", errors="replace")
        return torch.tensor(tokenizer.encode(text).ids, dtype=torch.long)

    train, val = encode(corpus.train), encode(corpus.val)
    return TokenData(train, val, corpus.val.numel() / max(1, val.numel()))


def _windows(data: torch.Tensor, count: int, length: int) -> torch.Tensor:
    """``count`` evenly spaced windows ``[count, length]`` of ``data``."""
    if data.numel() < length + 1:
        raise ValueError(f"data: {data.numel()} tokens is too short for seq_len = {length}")
    starts = torch.linspace(0, data.numel() - length - 1, count).long()
    return torch.stack([data[s : s + length] for s in starts.tolist()])


def _batches(data: TokenData, exp: LinearizeExperiment, salt: int):
    """``step -> input_ids [batch_size, seq_len]``: text windows plus ``recall_share`` recall rows."""
    from linearlab.tasks.long_recall import recall_rows

    n_recall = round(exp.recall_share * exp.batch_size) if data.byte_level else 0

    def batch_fn(step: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(exp.seed * 1_000_003 + salt * 10_007 + step)
        n_text = exp.batch_size - n_recall
        starts = torch.randint(0, data.train.numel() - exp.seq_len - 1, (n_text,), generator=gen)
        rows = [data.train[s : s + exp.seq_len] for s in starts.tolist()]
        if n_recall:
            recall, _ = recall_rows(data.train, n_recall, exp.seq_len, exp.recall_pairs, gen)
            rows.extend(recall)
        return torch.stack(rows)

    return batch_fn


def _recall_set(exp: LinearizeExperiment, data: TokenData) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Held-out recall rows (filler from validation text), or None when recall is off."""
    from linearlab.tasks.long_recall import recall_rows

    if exp.recall_share == 0 or not data.byte_level:
        return None
    gen = torch.Generator().manual_seed(exp.seed + 77_777)
    return recall_rows(data.val, exp.recall_eval_rows, exp.seq_len, exp.recall_pairs, gen)


@torch.no_grad()
def _recall(model, recall_set: tuple[torch.Tensor, torch.Tensor] | None) -> float | None:
    from linearlab.convert.lm_calls import lm_logits
    from linearlab.tasks.long_recall import recall_accuracy

    if recall_set is None:
        return None
    rows, mask = recall_set
    model.eval()
    logits = torch.cat([lm_logits(model, part) for part in rows.split(16)])
    return recall_accuracy(logits, rows, mask)


@torch.no_grad()
def _bits_per_byte(model, windows: torch.Tensor, bytes_per_token: float) -> float:
    from linearlab.convert.lm_calls import next_token_loss

    model.eval()
    nats = float(sum(next_token_loss(model, w[None]) for w in windows) / len(windows))
    return nats / math.log(2) / bytes_per_token


# -- teacher -------------------------------------------------------------------------------------


def _teacher_dir(exp: LinearizeExperiment, run_dir: RunDir) -> Path:
    return Path(exp.teacher) if exp.teacher else run_dir.path / "teacher" / "model"


def _train_teacher(exp: LinearizeExperiment, run_dir: RunDir, data: TokenData) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from linearlab.convert.lm_calls import next_token_loss
    from linearlab.train import TrainConfig, train

    target = _teacher_dir(exp, run_dir)
    if (target / "config.json").exists():
        return
    torch.manual_seed(exp.seed)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=exp.d_model,
        intermediate_size=exp.mlp_hidden,
        num_hidden_layers=exp.n_layers,
        num_attention_heads=exp.num_heads,
        num_key_value_heads=exp.num_kv_heads,
        max_position_embeddings=max(exp.decode_context + exp.decode_tokens, exp.seq_len),
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    model = LlamaForCausalLM(config)
    folder = RunDir.create("linearize", run_dir.path / "teacher")
    cfg = TrainConfig(
        steps=exp.teacher_steps, batch_size=exp.batch_size, lr=exp.teacher_lr, warmup_steps=30,
        checkpoint_every=100, seed=exp.seed,
    )  # fmt: skip
    train(model, _batches(data, exp, 0), lambda m, b: (next_token_loss(m, b), {}), cfg,
          run_dir=folder, resume=True, desc="teacher", tokens_per_batch=exp.batch_size * exp.seq_len)  # fmt: skip
    model.save_pretrained(str(target))  # writes config.json last, so a half-saved folder is redone


def _load_teacher(exp: LinearizeExperiment, run_dir: RunDir):
    from transformers import AutoModelForCausalLM

    import linearlab  # noqa: F401 - registers linearlab's model types

    model = AutoModelForCausalLM.from_pretrained(str(_teacher_dir(exp, run_dir)), dtype=torch.float32)
    return model.eval()


# -- decoding cost -------------------------------------------------------------------------------


@torch.no_grad()
def _decode_cost(model, exp: LinearizeExperiment) -> dict[str, float]:
    """Prefill ``decode_context`` tokens, then time ``decode_tokens`` single-token steps."""
    from transformers import DynamicCache

    from linearlab.convert.hf_attention import LinearStateLayer

    model.eval()
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(exp.seed)
    ids = torch.randint(0, min(vocab, 256), (1, exp.decode_context), generator=gen)
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, cache=cache, use_cache=True)
    token = out.logits[:, -1:].argmax(-1)
    t0 = time.perf_counter()
    for _ in range(exp.decode_tokens):
        out = model(input_ids=token, cache=cache, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
    ms = (time.perf_counter() - t0) * 1000 / exp.decode_tokens
    state = 0
    for layer in cache.layers:
        if isinstance(layer, LinearStateLayer):
            state += layer.state_bytes()
        elif getattr(layer, "keys", None) is not None:
            state += layer.keys.numel() * layer.keys.element_size() * 2
    return {"decode_ms_per_token": ms, "state_bytes": state}


# -- one method ----------------------------------------------------------------------------------


def _run_variant(
    label: str,
    exp: LinearizeExperiment,
    run_dir: RunDir,
    data: TokenData,
    val: torch.Tensor,
    recall_set: tuple[torch.Tensor, torch.Tensor] | None,
) -> dict[str, Any]:
    from linearlab.convert import LinearizeConfig, attention_agreement, distill_attention, finetune_lora
    from linearlab.convert.lm_calls import parameter_counts
    from linearlab.train import TrainConfig

    folder = RunDir.create("linearize", run_dir.path / label)
    done = folder.file("result.json")
    if done.exists():
        return json.loads(done.read_text())
    fields, transfer, lora = VARIANTS.get(label)
    model = _load_teacher(exp, run_dir)
    from linearlab.convert import linearize_

    torch.manual_seed(exp.seed)
    settings = dict(window_size=exp.window_size, budget=exp.still_budget, block_size=exp.still_block)
    linearize_(model, LinearizeConfig(**settings, **fields))
    tokens = exp.batch_size * exp.seq_len
    record: dict[str, Any] = {"label": label, "config": fields, "params": parameter_counts(model)[1]}
    record["bpb_swap"] = _bits_per_byte(model, val, data.bytes_per_token)
    record["recall_swap"] = _recall(model, recall_set)
    probe = val[: min(4, len(val))]
    record["agreement_swap"] = attention_agreement(model, probe)
    if transfer:
        stage1 = distill_attention(
            model, _batches(data, exp, 1),
            TrainConfig(steps=exp.distill_steps, batch_size=exp.batch_size, lr=exp.distill_lr,
                        weight_decay=0.0, warmup_steps=10, checkpoint_every=50, seed=exp.seed),
            run_dir=RunDir.create("linearize", folder.path / "stage1"), resume=True, desc=f"{label} stage 1",
        )  # fmt: skip
        record["stage1"] = {"trainable": stage1.trainable_params, "tokens": stage1.train.steps * tokens,
                            "first_losses": stage1.train.losses[:3]}  # fmt: skip
        record["bpb_stage1"] = _bits_per_byte(model, val, data.bytes_per_token)
        record["recall_stage1"] = _recall(model, recall_set)
        record["agreement_stage1"] = attention_agreement(model, probe)
    if lora:
        model, stage2 = finetune_lora(
            model, _batches(data, exp, 2),
            TrainConfig(steps=exp.lora_steps, batch_size=exp.batch_size, lr=exp.lora_lr, weight_decay=0.0,
                        warmup_steps=10, checkpoint_every=50, seed=exp.seed),
            rank=exp.lora_rank, alpha=exp.lora_alpha,
            run_dir=RunDir.create("linearize", folder.path / "stage2"), resume=True, desc=f"{label} stage 2",
        )  # fmt: skip
        record["stage2"] = {"trainable": stage2.trainable_params, "tokens": stage2.train.steps * tokens,
                            "first_losses": stage2.train.losses[:3]}  # fmt: skip
        record["bpb_stage2"] = _bits_per_byte(model, val, data.bytes_per_token)
        record["recall_stage2"] = _recall(model, recall_set)
    record.update(_decode_cost(model, exp))
    model.save_pretrained(str(folder.path / "model"))
    atomic_write_json(done, record)
    return record


# -- table ---------------------------------------------------------------------------------------


def _final_bpb(r: dict[str, Any]) -> float:
    return r.get("bpb_stage2", r.get("bpb_stage1", r["bpb_swap"]))


def verdicts(summary: dict[str, Any]) -> list[str]:
    """The papers' expectations next to what this run measured, each with its numbers."""
    rows = {r["label"]: r for r in summary["results"]}
    t_bpb = summary["teacher"]["bpb"]
    lines = []

    def closed(r: dict[str, Any]) -> float:
        gap = r["bpb_swap"] - t_bpb
        return (r["bpb_swap"] - _final_bpb(r)) / gap if gap > 0.01 else float("nan")

    if "lolcats" in rows:
        r = rows["lolcats"]
        c = closed(r)
        share = r["stage1"]["trainable"] / r["params"] if "stage1" in r else float("nan")
        if c != c:
            lines.append("LoLCATs recovers most of the gap: n/a (the swap cost under 0.01 bits/byte here)")
        else:
            lines.append(
                f"LoLCATs recovers most of the gap (paper: yes, ~0.2% of parameters in stage 1): closed "
                f"{100 * c:.0f}% training {100 * share:.2f}% of the parameters in stage 1 -> "
                f"{'agrees' if c > 0.5 else 'does not agree'}"
            )
    if "lolcats" in rows and "lolcats_lora_only" in rows:
        a, b = _final_bpb(rows["lolcats"]), _final_bpb(rows["lolcats_lora_only"])
        lines.append(
            f"attention transfer before LoRA beats LoRA alone (paper: yes): {a:.3f} vs {b:.3f} bits/byte -> "
            f"{'agrees' if a < b else 'does not agree'}"
        )
    if "hedgehog" in rows:
        hh = rows["hedgehog"].get("agreement_stage1", rows["hedgehog"]["agreement_swap"])["xent"]
        for other in ("t2r", "elu1"):
            if other in rows:
                ox = rows[other].get("agreement_stage1", rows[other]["agreement_swap"])["xent"]
                lines.append(
                    f"Hedgehog matches the softmax weights better than {other} (paper: yes): attention "
                    f"cross-entropy {hh:.3f} vs {ox:.3f} nats -> {'agrees' if hh < ox else 'does not agree'}"
                )
    if "liger" in rows and "lolcats" in rows:
        a, b = _final_bpb(rows["liger"]), _final_bpb(rows["lolcats"])
        lines.append(
            f"Liger recovers about as much as LoLCATs with one stage (paper: yes): {a:.3f} vs {b:.3f} "
            f"bits/byte -> {'agrees' if a <= b + 0.05 * abs(b - t_bpb) + 0.02 else 'does not agree'}"
        )
    if "still" in rows and rows["still"].get("recall_stage2") is not None:
        st = rows["still"]["recall_stage2"]
        for other in ("lolcats", "liger"):
            if other in rows and rows[other].get("recall_stage2") is not None:
                ot = rows[other]["recall_stage2"]
                lines.append(
                    f"STILL recalls more of the far keys than {other}'s window routing (paper: yes): "
                    f"{st:.3f} vs {ot:.3f} -> {'agrees' if st > ot else 'does not agree'}"
                )
    return lines


def _cell(x: float | None) -> str:
    return "-" if x is None or x != x else fmt(x)


def _share(stage: dict[str, Any] | None, result: dict[str, Any]) -> str:
    """Trainable parameters of a stage as a percentage of the model's."""
    return "-" if stage is None else f"{100 * stage['trainable'] / result['params']:.2f}%"


def _tokens(stage: dict[str, Any] | None) -> str:
    return "-" if stage is None else f"{stage['tokens']:,}"


def table(summary: dict[str, Any]) -> str:
    teacher = summary["teacher"]
    t_bpb = teacher["bpb"]
    rows = [["teacher (softmax)", fmt(t_bpb), "", "", "", "", "", "", "", "", _cell(teacher.get("recall")),
             fmt(teacher["decode_ms_per_token"], 2), f"{teacher['state_bytes']:,}"]]  # fmt: skip
    for r in summary["results"]:
        gap = r["bpb_swap"] - t_bpb
        # a swap that costs (almost) nothing leaves no gap to close
        closed = f"{100 * (r['bpb_swap'] - _final_bpb(r)) / gap:.0f}%" if gap > 0.01 else "n/a"
        s1, s2 = r.get("stage1"), r.get("stage2")
        xent = r.get("agreement_stage1", r["agreement_swap"])["xent"]
        rows.append([
            r["label"], "", fmt(r["bpb_swap"]), _cell(r.get("bpb_stage1")), _cell(r.get("bpb_stage2")),
            closed, f"{_share(s1, r)} / {_share(s2, r)}", f"{_tokens(s1)} / {_tokens(s2)}",
            _cell(r["agreement_swap"]["xent"]), _cell(xent),
            " / ".join(_cell(r.get(f"recall_{k}")) for k in ("swap", "stage1", "stage2")),
            fmt(r["decode_ms_per_token"], 2), f"{r['state_bytes']:,}",
        ])  # fmt: skip
    headers = ["method", "teacher bpb", "swap bpb", "stage 1 bpb", "stage 2 bpb", "gap closed",
               "trainable (s1 / s2)", "tokens (s1 / s2)", "attn xent swap", "attn xent s1",
               "recall (swap / s1 / s2)", f"decode ms/tok @{summary['decode_context']}", "state bytes"]  # fmt: skip
    entropy = (
        summary["results"][0]["agreement_swap"]["teacher_entropy"] if summary["results"] else float("nan")
    )
    note = (
        f"\nbpb: validation bits per byte; gap closed = (swap - final) / (swap - teacher); attention "
        f"xent: cross-entropy of the linear weights under the teacher's (>= the teacher's own entropy, "
        f"{entropy:.3f} nats); recall: accuracy on answers whose key lies beyond the softmax window.\n{PAPER}\n"
        + "\n".join(verdicts(summary))
    )
    return format_table(headers, rows) + note


def plot(summary: dict[str, Any], run_dir: RunDir) -> None:
    """Bits per byte of each method at each stage, against the teacher's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    stages = ["bpb_swap", "bpb_stage1", "bpb_stage2"]
    for r in summary["results"]:
        xs = [i for i, s in enumerate(stages) if s in r]
        ax.plot(xs, [r[stages[i]] for i in xs], marker="o", label=r["label"])
    ax.axhline(summary["teacher"]["bpb"], color="black", linestyle="--", label="teacher (softmax)")
    ax.set_xticks(range(3), ["after swap", "after attention transfer", "after LoRA"])
    ax.set_ylabel("validation bits per byte")
    ax.set_title("Linearising a pretrained Llama")
    ax.legend(fontsize=8)
    fig.tight_layout()
    run_dir.save_figure("linearize_bits_per_byte.png", fig)


# -- recipe --------------------------------------------------------------------------------------


def check(exp: LinearizeExperiment) -> None:
    """A teacher folder that is missing, not a causal LM, of another family or with too small a
    vocabulary fails here, before anything is written or trained."""
    if not exp.teacher:
        return
    folder = check_input_path(exp.teacher, "dir", "--teacher")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(
            f"--teacher: {str(folder)!r} has no config.json; expected a Hugging Face checkpoint folder"
        )
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"--teacher: {str(config_file)!r} is not valid JSON ({err.msg})") from None
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if model_type not in SUPPORTED_TEACHERS or not any(a.endswith("ForCausalLM") for a in architectures):
        raise ValueError(
            f"--teacher: {str(folder)!r} holds a {model_type!r} model ({', '.join(architectures) or 'no architectures'}); "
            f"expected a causal LM of type {', '.join(SUPPORTED_TEACHERS)}"
        )
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise ValueError(f"--teacher: {str(folder)!r} has no weights (*.safetensors)")
    has_tokenizer = (folder / "tokenizer.json").is_file()
    vocab = int(config.get("vocab_size", 0))
    if not has_tokenizer and vocab < 256:
        raise ValueError(
            f"--teacher: vocab_size {vocab} cannot hold the corpus's byte ids 0..255; give a byte-level "
            "teacher (vocab_size >= 256) or a folder with tokenizer.json"
        )


def run(exp: LinearizeExperiment, run_dir: RunDir) -> dict[str, Any]:
    check(exp)
    t0 = time.perf_counter()
    data = _load_data(exp)
    _train_teacher(exp, run_dir, data)
    val = _windows(data.val, exp.eval_windows, exp.seq_len)
    recall_set = _recall_set(exp, data)
    teacher_file = run_dir.file("teacher.json")
    if teacher_file.exists():
        teacher = json.loads(teacher_file.read_text())
    else:
        model = _load_teacher(exp, run_dir)
        teacher = {
            "bpb": _bits_per_byte(model, val, data.bytes_per_token),
            "recall": _recall(model, recall_set),
            **_decode_cost(model, exp),
        }
        atomic_write_json(teacher_file, teacher)
    results = [
        _run_variant(label, exp, run_dir, data, val, recall_set) for label in VARIANTS.check(exp.methods)
    ]
    summary = {
        "teacher": teacher,
        "results": results,
        "decode_context": exp.decode_context,
        "experiment": dataclasses.asdict(exp),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(table(summary))
    plot(summary, run_dir)
    return summary


def report(run_dir: RunDir) -> str:
    summary = run_dir.read_summary()
    plot(summary, run_dir)
    return table(summary)


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """Bits/byte of the teacher and of each method after its last stage, the share of the swap's
    gap to the teacher that training closed, and far-key recall after the last stage."""
    teacher = summary["teacher"]
    out: dict[str, float] = {"teacher bpb": teacher["bpb"]}
    if teacher.get("recall") is not None:
        out["teacher recall"] = teacher["recall"]
    for r in summary["results"]:
        final = _final_bpb(r)
        out[f"{r['label']} bpb"] = final
        gap = r["bpb_swap"] - teacher["bpb"]
        if gap > 0.01:
            out[f"{r['label']} gap closed"] = (r["bpb_swap"] - final) / gap
        recall = r.get("recall_stage2", r.get("recall_stage1", r.get("recall_swap")))
        if recall is not None:
            out[f"{r['label']} recall"] = recall
    return out


RECIPE = Recipe(
    name="linearize",
    help="linearise a pretrained Llama (T2R, Hedgehog, LoLCATs): bits/byte per stage, params, decode cost",
    config=LinearizeExperiment,
    presets={"default": LinearizeExperiment, "smoke": _smoke},
    run=run,
    report=report,
    flags=(
        Flag("--teacher", "teacher", "a local Hugging Face Llama/Mistral/Qwen2 checkpoint folder"),
        Flag("--methods", "methods", f"comma-separated variants (default {DEFAULT_METHODS})"),
    ),
    check=check,
    headline=headline,
)
