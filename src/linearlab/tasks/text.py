"""Byte-level language modelling on any text files.

The embedded default corpus is the running Python's standard-library sources: a fixed, sorted list
of ``*.py`` files, so the data needs no download and is the same for everyone on one Python version.
Files are split into train / validation by a stable hash of their relative path.
"""

from __future__ import annotations

import hashlib
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from linearlab.io import check_input_path


def stdlib_files() -> list[Path]:
    """Sorted ``*.py`` files of this Python's standard library (tests and site-packages excluded)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if rel[0] in ("site-packages", "dist-packages", "test", "idlelib") or "tests" in rel:
            continue
        files.append(path)
    return files


def _is_validation(name: str, val_fraction: float) -> bool:
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:4], "little") / 2**32 < val_fraction


@dataclass
class ByteCorpus:
    """Train and validation byte streams (``uint8`` tensors)."""

    train: torch.Tensor
    val: torch.Tensor
    num_files: int

    @classmethod
    def from_files(
        cls,
        files: Sequence[str | Path] | None = None,
        val_fraction: float = 0.05,
        max_bytes: int | None = 8_000_000,
    ) -> ByteCorpus:
        """Read ``files`` (default: the standard library) and split them into train / validation.

        ``max_bytes`` caps the total read (files are taken in sorted order until it is reached).
        """
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction: must be in (0, 1), got {val_fraction}")
        if files is None:
            root = Path(sysconfig.get_paths()["stdlib"])
            paths = [(p, str(p.relative_to(root))) for p in stdlib_files()]
        else:
            paths = [(check_input_path(f, "file", "files"), str(f)) for f in files]
            if not paths:
                raise ValueError("files: empty list; give at least one text file")
        train_parts, val_parts, total = [], [], 0
        for path, name in paths:
            data = path.read_bytes()
            if max_bytes is not None and total + len(data) > max_bytes:
                data = data[: max_bytes - total]
            (val_parts if _is_validation(name, val_fraction) else train_parts).append(data)
            total += len(data)
            if max_bytes is not None and total >= max_bytes:
                break
        if not val_parts or not train_parts:
            # too few files for the per-file split to fill both sides (e.g. one file): split the
            # bytes instead and keep the tail for validation
            joined = b"".join(train_parts + val_parts)
            cut = max(1, int(len(joined) * (1 - val_fraction)))
            train_parts, val_parts = [joined[:cut]], [joined[cut:]]
        train = torch.frombuffer(bytearray(b"".join(train_parts)), dtype=torch.uint8)
        val = torch.frombuffer(bytearray(b"".join(val_parts)), dtype=torch.uint8)
        return cls(train=train, val=val, num_files=len(paths))


def sample_windows(
    data: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows ``x: [B, seq_len]`` and next-byte targets ``y: [B, seq_len]`` (int64)."""
    if data.numel() < seq_len + 2:
        raise ValueError(f"data: {data.numel()} bytes is too short for seq_len = {seq_len}")
    starts = torch.randint(0, data.numel() - seq_len - 1, (batch_size,), generator=generator)
    idx = starts[:, None] + torch.arange(seq_len + 1)
    chunk = data[idx].long()
    return chunk[:, :-1], chunk[:, 1:]


def window_batches(data: torch.Tensor, batch_size: int, seq_len: int, seed: int):
    """``step -> (x, y)``: :func:`sample_windows` with a generator seeded by ``seed * 1_000_003 + step``.

    A pure function of the step, so a resumed training sees exactly the batches an uninterrupted one
    would have seen (the train loop's contract for ``batch_fn``).
    """

    def batch_fn(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return sample_windows(
            data, batch_size, seq_len, torch.Generator().manual_seed(seed * 1_000_003 + step)
        )

    return batch_fn


def eval_windows(data: torch.Tensor, seq_len: int, max_windows: int | None = None) -> torch.Tensor:
    """Consecutive non-overlapping windows of ``seq_len + 1`` bytes: ``[W, seq_len + 1]`` int64."""
    n = (data.numel() - 1) // seq_len
    if max_windows is not None:
        n = min(n, max_windows)
    if n < 1:
        raise ValueError(f"data: {data.numel()} bytes is too short for one window of {seq_len}")
    idx = torch.arange(n)[:, None] * seq_len + torch.arange(seq_len + 1)
    return data[idx].long()


# -- sub-word tokens -------------------------------------------------------------------------------


def cache_root() -> Path:
    """Where trained artefacts shared between runs live: ``$LINEARLAB_CACHE`` or ``~/.cache/linearlab``."""
    import os

    return Path(os.environ.get("LINEARLAB_CACHE") or Path.home() / ".cache" / "linearlab")


@dataclass
class TokenCorpus:
    """Train / validation token ids (``int64``) and how many bytes one token stands for on average.

    ``bytes_per_token`` converts a loss in nats/token into bits/byte:
    ``bpb = nats / ln 2 / bytes_per_token`` (1.0 for byte-level data).
    """

    train: torch.Tensor
    val: torch.Tensor
    vocab_size: int
    bytes_per_token: float
    tokenizer_file: Path | None = None


def byte_tokens(corpus: ByteCorpus) -> TokenCorpus:
    """The byte corpus as tokens (vocabulary 256)."""
    return TokenCorpus(corpus.train.long(), corpus.val.long(), 256, 1.0)


def bpe_tokens(
    corpus: ByteCorpus, vocab_size: int = 16384, cache_dir: str | Path | None = None
) -> TokenCorpus:
    """The corpus in byte-level BPE tokens, the tokenizer trained here with Hugging Face ``tokenizers``.

    The tokenizer is trained on the train split only and cached with the encoded ids under
    ``cache_dir`` (default ``cache_root()/bpe/<vocab>-<digest of the corpus>``), so recipes that ask for
    the same corpus and vocabulary share one tokenizer.

    Example:
        >>> tokens = bpe_tokens(ByteCorpus.from_files(max_bytes=2_000_000), vocab_size=4096)
        >>> tokens.train.shape, tokens.bytes_per_token   # about 3 bytes per token on Python sources
    """
    from safetensors.torch import load_file

    from linearlab.io import atomic_save_safetensors, atomic_write_text

    if not 256 < vocab_size <= 1_000_000:
        raise ValueError(f"vocab_size: must be in (256, 1000000] for byte-level BPE, got {vocab_size}")
    digest = hashlib.sha256(corpus.train.numpy().tobytes() + corpus.val.numpy().tobytes()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "bpe" / f"{vocab_size}-{digest}"
    tok_file, ids_file = folder / "tokenizer.json", folder / "ids.safetensors"
    if not (tok_file.is_file() and ids_file.is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        tokenizer = _train_bpe(corpus.train, vocab_size)
        atomic_write_text(tok_file, tokenizer.to_str())
        ids = {
            name: _encode(tokenizer, data) for name, data in (("train", corpus.train), ("val", corpus.val))
        }
        atomic_save_safetensors(ids_file, ids)
    ids = load_file(str(ids_file))
    val_bytes = corpus.val.numel()
    return TokenCorpus(
        ids["train"].long(), ids["val"].long(), vocab_size, val_bytes / max(1, ids["val"].numel()), tok_file
    )


def _train_bpe(train: torch.Tensor, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte stays encodable
        show_progress=False,
    )
    text = bytes(train.tolist()).decode("utf-8", errors="replace")
    # lines as the training "documents": the trainer counts words per document, and one giant string
    # would make it hold the whole corpus as a single sequence
    tokenizer.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
    return tokenizer


def _encode(tokenizer, data: torch.Tensor) -> torch.Tensor:
    text = bytes(data.tolist()).decode("utf-8", errors="replace")
    lines = text.splitlines(keepends=True)
    ids = [i for enc in tokenizer.encode_batch(lines) for i in enc.ids]
    return torch.tensor(ids, dtype=torch.int32)
