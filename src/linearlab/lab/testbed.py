"""A small pretrained language model that recipes share: the test bed for surgery and analysis.

Model surgery (quantization, sparsification, restoration) and the analysis tools need "a model people
already have". Here that is a :class:`~linearlab.models.MixerLM` trained on the standard-library corpus
(bytes or BPE tokens) through the one training loop. It is trained once per configuration and cached
under ``cache_root()/testbed/<digest of the config>/`` (``$LINEARLAB_CACHE``, default
``~/.cache/linearlab``), so every recipe asking for the same configuration reuses it, and an
interrupted training resumes from its last checkpoint.

Example:
    >>> bed = pretrained_lm(TestbedConfig(steps=600))
    >>> bed.model, bed.val_bpb        # a trained MixerLM and its validation bits per byte
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from linearlab.io import atomic_write_json
from linearlab.models import MixerLM, ModelConfig
from linearlab.tasks.text import ByteCorpus, TokenCorpus, bpe_tokens, byte_tokens, cache_root, window_batches

TOKENIZERS = ("byte", "bpe")


@dataclass(frozen=True)
class TestbedConfig:
    """What the shared test-bed LM is and how it is trained.

    Args:
        d_model, n_layers, mixer, num_heads: the MixerLM (default a 4-layer, d=128 softmax transformer
            with 4 heads and a SwiGLU MLP).
        tokenizer: ``"byte"`` (vocabulary 256) or ``"bpe"`` (byte-level BPE trained here, ``vocab_size``).
        vocab_size: BPE vocabulary (ignored for bytes).
        seq_len, batch_size, steps, lr, seed: training (AdamW, warm-up + cosine; default 600 steps of
            16 x 256 tokens, about 2.5M tokens: the model the surgery and analysis recipes share).
        max_bytes: how much of the standard library the corpus reads.
    """

    __test__ = False  # not a pytest test class despite the name

    d_model: int = 128
    n_layers: int = 4
    mixer: str = "softmax"
    num_heads: int = 4
    tokenizer: str = "byte"
    vocab_size: int = 16384
    seq_len: int = 256
    batch_size: int = 16
    steps: int = 600
    lr: float = 3e-3
    seed: int = 0
    max_bytes: int = 8_000_000

    def __post_init__(self) -> None:
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer: must be one of {TOKENIZERS}, got {self.tokenizer!r}")
        for name in ("d_model", "n_layers", "num_heads", "seq_len", "batch_size", "steps", "max_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(
            vocab_size=vocab_size,
            d_model=self.d_model,
            n_layers=self.n_layers,
            mixer=self.mixer,
            mixer_kwargs={"num_heads": self.num_heads},
            max_seq_len=max(2048, 4 * self.seq_len),
        )

    def digest(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Testbed:
    """A trained test-bed LM: ``model`` (eval mode), its ``data``, validation ``val_bpb`` and cache ``path``."""

    __test__ = False

    model: MixerLM
    data: TokenCorpus
    val_bpb: float
    path: Path
    config: TestbedConfig


@dataclass
class TestbedFields:
    """The ``bed_*`` fields a recipe config inherits to choose its test bed (defaults: :class:`TestbedConfig`'s).

    One set of fields and defaults for every recipe that works on the shared model, so their default
    runs share one cached test bed; ``--set bed_steps=200`` changes it for one run.
    """

    bed_d_model: int = TestbedConfig.d_model
    bed_n_layers: int = TestbedConfig.n_layers
    bed_num_heads: int = TestbedConfig.num_heads
    bed_seq_len: int = TestbedConfig.seq_len
    bed_batch_size: int = TestbedConfig.batch_size
    bed_steps: int = TestbedConfig.steps
    bed_max_bytes: int = TestbedConfig.max_bytes

    def bed(self) -> TestbedConfig:
        return testbed_from(self)


def testbed_from(config: object, prefix: str = "bed_", **fixed: object) -> TestbedConfig:
    """The :class:`TestbedConfig` a recipe's config describes with ``<prefix><field>`` attributes.

    Recipes expose the test bed's settings as ``bed_d_model``, ``bed_steps``, ... so ``--set`` can change
    them; fields they do not expose keep their defaults, and ``fixed`` sets the rest (e.g. the tokenizer).
    """
    values = {
        f.name: getattr(config, prefix + f.name)
        for f in dataclasses.fields(TestbedConfig)
        if hasattr(config, prefix + f.name)
    }
    return TestbedConfig(**{**values, **fixed})


def load_tokens(cfg: TestbedConfig) -> TokenCorpus:
    """The corpus of ``cfg`` as token ids (the BPE tokenizer cached as :func:`bpe_tokens` does)."""
    corpus = ByteCorpus.from_files(None, max_bytes=cfg.max_bytes)
    return byte_tokens(corpus) if cfg.tokenizer == "byte" else bpe_tokens(corpus, cfg.vocab_size)


def pretrained_lm(
    cfg: TestbedConfig = TestbedConfig(),
    cache_dir: str | Path | None = None,
    on_step: Callable[[int, torch.nn.Module], None] | None = None,
) -> Testbed:
    """The test-bed LM of ``cfg``: trained on first use, loaded from the cache afterwards.

    ``cache_dir`` replaces ``cache_root()/testbed/<cfg digest>`` (tests pass a temporary folder).
    ``on_step`` is the train loop's per-step hook while it trains (e.g.
    :func:`linearlab.lab.parallel.step_done` when test beds train side by side in ``run_jobs``).
    """
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "testbed" / cfg.digest()
    folder.mkdir(parents=True, exist_ok=True)
    # two recipes started together would otherwise train the same test bed into one folder at once
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _load_or_train(cfg, folder, on_step)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _load_or_train(
    cfg: TestbedConfig, folder: Path, on_step: Callable[[int, torch.nn.Module], None] | None
) -> Testbed:
    from linearlab.runs import RunDir
    from linearlab.train import TrainConfig, train
    from linearlab.train.checkpoint import load_checkpoint

    data = load_tokens(cfg)
    torch.manual_seed(cfg.seed)
    model = MixerLM(cfg.model_config(data.vocab_size))
    done = folder / "result.json"
    if done.is_file():
        stored = json.loads(done.read_text())
        if stored.get("config") != dataclasses.asdict(cfg):
            raise ValueError(
                f"cache_dir: {str(folder)!r} holds a test bed of another configuration; use another folder"
            )
        load_checkpoint(folder / "checkpoint.safetensors", model)
        return Testbed(model.eval(), data, float(stored["val_bpb"]), folder, cfg)

    batch_fn = window_batches(data.train, cfg.batch_size, cfg.seq_len, cfg.seed)

    train_cfg = TrainConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=min(50, max(1, cfg.steps // 10)),
        checkpoint_every=100,
        seed=cfg.seed,
        progress=on_step is None,  # a caller counting steps shows its own bar
    )
    run_dir = RunDir.create("testbed", folder)
    train(
        model,
        batch_fn,
        lambda m, b: (m.loss(*b), {}),
        train_cfg,
        run_dir=run_dir,
        resume=True,
        desc="test-bed LM",
        tokens_per_batch=cfg.batch_size * cfg.seq_len,
        on_step=on_step if on_step is not None else (),
    )
    model.eval()
    bpb = bits_per_byte(model, val_windows(data, cfg.seq_len), data.bytes_per_token)
    # the loop's final checkpoint holds the trained weights; result.json (written last) marks it complete
    atomic_write_json(done, {"config": dataclasses.asdict(cfg), "val_bpb": bpb})
    return Testbed(model, data, bpb, folder, cfg)


def val_windows(data: TokenCorpus, seq_len: int, max_windows: int = 64) -> torch.Tensor:
    """Up to ``max_windows`` consecutive validation windows ``[W, seq_len + 1]`` (int64)."""
    from linearlab.tasks.text import eval_windows

    return eval_windows(data.val, seq_len, max_windows)


@torch.no_grad()
def bits_per_byte(model: torch.nn.Module, windows: torch.Tensor, bytes_per_token: float = 1.0) -> float:
    """Next-token loss of a causal LM on ``windows: [W, L + 1]`` in bits per byte.

    ``model(ids)`` may return logits or an object with ``.logits`` (MixerLM, Hugging Face models).
    """
    if windows.ndim != 2 or windows.shape[1] < 2:
        raise ValueError(f"windows: expected [W, L + 1] with L >= 1, got shape {tuple(windows.shape)}")
    total, count = 0.0, 0
    for part in windows.split(8):
        out = model(part[:, :-1])
        logits = (out.logits if hasattr(out, "logits") else out).float()
        total += F.cross_entropy(logits.flatten(0, 1), part[:, 1:].flatten(), reduction="sum").item()
        count += part[:, 1:].numel()
    return total / count / math.log(2) / bytes_per_token
