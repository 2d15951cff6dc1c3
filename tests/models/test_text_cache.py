"""The text-embedding cache: a second run encodes nothing, new texts only are encoded, a bad file is named."""

from __future__ import annotations

import numpy as np
import pytest

from lib.models.text import TextEmbeddingCache


class CountingEncoder:
    """A deterministic stand-in for MiniLM that records what it was asked to encode."""

    def __init__(self, dim=4):
        self.dim, self.calls = dim, []

    def __call__(self, texts):
        self.calls.append(list(texts))
        return np.stack([np.random.default_rng(abs(hash(t)) % 2**32).normal(size=self.dim) for t in texts])


def test_second_run_reuses_the_cache_and_new_texts_alone_are_encoded(tmp_path):
    path = tmp_path / "cache" / "texts.npz"
    encoder = CountingEncoder()
    first = TextEmbeddingCache(path, encoder).embed(["a bar", "a cafe", "a bar"])
    assert encoder.calls == [["a bar", "a cafe"]]  # each distinct text once
    np.testing.assert_array_equal(first[0], first[2])
    again = TextEmbeddingCache(path, encoder)  # a new process would open the file like this
    np.testing.assert_array_equal(again.embed(["a cafe", "a bar"]), first[[1, 0]])
    assert again.n_encoded == 0 and len(encoder.calls) == 1
    mixed = again.embed(["a school", "a bar"])
    assert again.n_encoded == 1 and encoder.calls[-1] == ["a school"]
    np.testing.assert_array_equal(mixed[1], first[0])
    assert sorted(p.name for p in path.parent.iterdir()) == ["texts.npz"]  # no temporary file left


def test_a_cache_of_another_model_or_an_unreadable_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "texts.npz"
    TextEmbeddingCache(path, CountingEncoder(), model_id="model-a").embed(["x"])
    with pytest.raises(ValueError, match="holds model 'model-a'"):
        TextEmbeddingCache(path, CountingEncoder(), model_id="model-b").embed(["x"])
    with pytest.raises(ValueError, match="8-d embeddings.*4-d"):
        TextEmbeddingCache(path, CountingEncoder(dim=8), model_id="model-a").embed(["y"])
    path.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="texts.npz cannot be read"):
        TextEmbeddingCache(path, CountingEncoder()).embed(["x"])
    assert path.read_bytes() == b"not a zip file"  # nothing overwritten


def test_the_packaged_minilm_embeds_through_the_cache(tmp_path):
    cache = TextEmbeddingCache(tmp_path / "minilm.npz")
    vectors = cache.embed(["Grand Bistro. Upmarket restaurant", "Budget Bakery. Plain bakery"])
    assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert cache.n_encoded == 2
    np.testing.assert_array_equal(TextEmbeddingCache(tmp_path / "minilm.npz").embed(
        ["Budget Bakery. Plain bakery"]), vectors[1:])
