"""The packaged MiniLM text encoder (lib.models.text): found offline, 384-dimensional unit embeddings."""

import os

import pytest
import torch

from lib.models import text


def test_digit_captions_name_the_ten_digits():
    captions = text.digit_captions("the number {}")
    assert len(captions) == 10 and captions[0] == "the number zero" and captions[7] == "the number seven"


def test_packaged_text_encoder_loads_offline_and_embeds_in_384_dimensions():
    try:
        text.text_encoder_path()
    except FileNotFoundError as err:
        pytest.skip(f"packaged MiniLM not available: {err}")
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    embeddings = text.embed_texts(text.digit_captions())
    assert embeddings.shape == (10, 384)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(10))
    similarity = embeddings @ embeddings.T
    assert similarity.fill_diagonal_(0).max() < 0.99  # ten different captions, ten different embeddings
