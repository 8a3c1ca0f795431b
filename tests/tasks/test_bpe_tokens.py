"""Byte-level BPE tokens of the corpus: lossless, cached, shorter than bytes."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from linearlab.tasks.text import ByteCorpus, bpe_tokens


@pytest.fixture(scope="module")
def corpus():
    return ByteCorpus.from_files(max_bytes=150_000)


def test_tokens_decode_back_to_the_text_and_are_cached(corpus, tmp_path):
    tokens = bpe_tokens(corpus, vocab_size=400, cache_dir=tmp_path)
    assert tokens.vocab_size == 400 and int(tokens.train.max()) < 400
    tokenizer = Tokenizer.from_file(str(tokens.tokenizer_file))
    text = bytes(corpus.val.tolist()).decode("utf-8")
    assert tokenizer.decode(tokens.val.tolist()) == text
    # merges make tokens longer than one byte
    assert tokens.bytes_per_token > 1.2
    again = bpe_tokens(corpus, vocab_size=400, cache_dir=tmp_path)
    assert again.train.equal(tokens.train)


def test_vocab_size_must_exceed_the_byte_alphabet(corpus, tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        bpe_tokens(corpus, vocab_size=256, cache_dir=tmp_path)
