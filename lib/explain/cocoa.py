"""Scalar explanation targets for representation encoders (COCOA and its baselines).

Feature-attribution methods (captum's IntegratedGradients, GradientShap, RISE, ...)
explain a scalar per input. An encoder ``h`` returns a representation vector, so
COCOA (Lin, Chen, Kim, Lee, "Contrastive Corpus Attribution for Explaining
Representations", ICLR 2023) explains a scalar built from it instead, the
*contrastive corpus similarity* (Sec. 3):

    f(x) = 1/|C| sum_{c in C} s(h(x), h(c)) - 1/|F| sum_{g in F} s(h(x), h(g)),

with a corpus ``C`` (the concept to explain, e.g. images of one class), a foil ``F``
(what to contrast with, e.g. random images) and the cosine similarity ``s``.
Attributions of ``f`` highlight the features that make the explicand ``x`` look
like the corpus rather than the foil.

The targets below are ``nn.Module``s mapping a batch of explicands ``(B, ...)`` to
one scalar each, ``(B,)``; each is ``score(explicand_representation(x))``, so
several targets of one encoder can share one forward pass (perturbation methods
such as RISE score every target on the same masked images):

* :class:`ContrastiveCorpusSimilarity`: COCOA's target.
* :class:`CorpusSimilarity`: the same without the foil term (COCOA's "corpus" baseline).
* :class:`LabelFreeImportance`: ``<h(x), h(x0)>`` with the explicand's own,
  detached representation (Crabbe & van der Schaar, "Label-Free Explainability
  for Unsupervised Models", ICML 2022).
* :class:`ContrastiveLabelFree`: the explicand's own representation as a
  one-element corpus, minus the foil term (COCOA's "contrastive label-free" baseline).

Corpus and foil representations are computed once (e.g. with :func:`lib.eval.encode.encode`) and stored as
detached buffers, so gradients flow only through the explicand's representation.
Encoders should be in ``eval()`` mode: batch statistics would otherwise couple the
explicands of a batch.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

Similarity = Literal["cosine", "dot"]
Form = Literal["mean", "pairwise"]

__all__ = [
    "ContrastiveCorpusSimilarity",
    "ContrastiveLabelFree",
    "CorpusSimilarity",
    "LabelFreeImportance",
]


def _check_similarity(similarity: str) -> None:
    if similarity not in ("cosine", "dot"):
        raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")


def _prepare(representations: Tensor, similarity: Similarity) -> Tensor:
    """Rows ready for a dot product: unit-normalised for cosine, unchanged for dot."""
    if similarity == "cosine":
        return F.normalize(representations, dim=-1)
    return representations


def _as_set(representations: Tensor, name: str) -> Tensor:
    """A detached copy of a non-empty (N, D) set of representations."""
    if representations.dim() != 2 or representations.shape[0] == 0:
        raise ValueError(
            f"{name} must have shape (N, D) with N >= 1, got {tuple(representations.shape)}"
        )
    return representations.detach().clone()


class ContrastiveCorpusSimilarity(nn.Module):
    """COCOA's explanation target, the contrastive corpus similarity (Sec. 3).

    For explicands ``x`` (B, ...), corpus representations ``H_C`` (C, D) and foil
    representations ``H_F`` (F, D)::

        f(x) = 1/C sum_c s(h(x), H_C[c]) - 1/F sum_g s(h(x), H_F[g])     -> (B,)

    ``s`` is the cosine similarity (the paper's choice) or the dot product. Both are
    bilinear once the rows are normalised, so the two averages collapse into a single
    direction ``d`` (D,), computed once at construction:

        cosine: f(x) = < h(x)/|h(x)|, mean_c H_C[c]/|H_C[c]| - mean_g H_F[g]/|H_F[g]| >
        dot:    f(x) = < h(x),        mean_c H_C[c]          - mean_g H_F[g] >

    ``form="mean"`` evaluates this (cost O(B D)); ``form="pairwise"`` evaluates the
    definition literally through the (B, C) and (B, F) similarity matrices (cost
    O(B (C + F) D)), for testing and for comparison. Both give the same values and
    gradients up to rounding.

    Args:
        encoder: the network that produced ``corpus_repr`` and ``foil_repr`` (for
            instance via :func:`lib.eval.encode.encode`); it also encodes the explicands unless
            ``explicand_encoder`` is given.
        corpus_repr: (C, D) corpus representations, stored as a detached buffer.
        foil_repr: (F, D) foil representations, stored as a detached buffer; ``None``
            drops the foil term (see :class:`CorpusSimilarity`).
        similarity: ``"cosine"`` or ``"dot"``.
        explicand_encoder: a separate encoder for the explicands, mapping into the
            same D-dimensional space, e.g. CLIP's image tower when the corpus and the
            foil are text embeddings (paper, Sec. 5 zero-shot localisation).
        form: ``"mean"`` (default) or ``"pairwise"``, see above.
    """

    def __init__(
        self,
        encoder: nn.Module,
        corpus_repr: Tensor,
        foil_repr: Tensor | None,
        similarity: Similarity = "cosine",
        explicand_encoder: nn.Module | None = None,
        form: Form = "mean",
    ) -> None:
        super().__init__()
        _check_similarity(similarity)
        if form not in ("mean", "pairwise"):
            raise ValueError(f"form must be 'mean' or 'pairwise', got {form!r}")
        corpus = _as_set(corpus_repr, "corpus_repr")
        foil = None if foil_repr is None else _as_set(foil_repr, "foil_repr")
        if foil is not None and foil.shape[1] != corpus.shape[1]:
            raise ValueError(
                f"corpus and foil dimensions differ: {corpus.shape[1]} vs {foil.shape[1]}"
            )
        self.encoder = encoder
        self.explicand_encoder = explicand_encoder
        self.similarity = similarity
        self.form = form
        self.register_buffer("corpus_repr", corpus)
        self.register_buffer("foil_repr", foil)
        direction = _prepare(corpus, similarity).mean(dim=0)
        if foil is not None:
            direction = direction - _prepare(foil, similarity).mean(dim=0)
        self.register_buffer("direction", direction)

    def explicand_network(self) -> nn.Module:
        """The module that encodes the explicands: ``explicand_encoder`` if given, else ``encoder``."""
        return self.encoder if self.explicand_encoder is None else self.explicand_encoder

    def explicand_representation(self, x: Tensor) -> Tensor:
        """h(x): (B, ...) -> (B, D), with gradients."""
        return self.explicand_network()(x)

    def forward(self, x: Tensor) -> Tensor:
        """f(x): (B, ...) -> (B,)."""
        return self.score(self.explicand_representation(x))

    def score(self, representation: Tensor) -> Tensor:
        """f as a function of the explicands' representations h(x): (B, D) -> (B,)."""
        h = _prepare(representation, self.similarity)
        if self.form == "mean":
            return h @ self.direction.to(h)
        score = (h @ _prepare(self.corpus_repr, self.similarity).to(h).T).mean(dim=1)
        if self.foil_repr is not None:
            score = score - (h @ _prepare(self.foil_repr, self.similarity).to(h).T).mean(dim=1)
        return score


class CorpusSimilarity(ContrastiveCorpusSimilarity):
    """Mean similarity to a corpus, without a foil (COCOA's "corpus" baseline target).

    ``f(x) = 1/C sum_c s(h(x), H_C[c])``: (B, ...) -> (B,); ``corpus_repr`` is (C, D).
    Same arguments as :class:`ContrastiveCorpusSimilarity` minus ``foil_repr``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        corpus_repr: Tensor,
        similarity: Similarity = "cosine",
        explicand_encoder: nn.Module | None = None,
        form: Form = "mean",
    ) -> None:
        super().__init__(encoder, corpus_repr, None, similarity, explicand_encoder, form)


class LabelFreeImportance(nn.Module):
    """Label-free feature importance target (Crabbe & van der Schaar 2022).

    For explicands ``x`` (B, ...) with their own representations ``r = h(x0)``
    computed on the *unperturbed* explicands and detached::

        f(x) = s(h(x), r)                                                -> (B,)

    with ``s`` the dot product (their definition, the default) or the cosine.
    Attributing ``f`` at ``x = x0`` asks which features keep ``h(x)`` aligned with
    ``h(x0)``.

    Where ``r`` comes from (it must never be recomputed from the perturbed inputs an
    attribution method feeds in, or the target would change along the path):

    * fixed at construction, ``reference_repr`` of shape (D,) or (1, D), shared by
      every row: one explicand at a time, the way to use :class:`lib.explain.rise.RISE`
      and :func:`lib.explain.removal.insertion_deletion_curves`, which pass many
      perturbed copies per call; or (B, D): one row per explicand, for methods that
      call ``forward`` on exactly the explicand batch (other batch sizes raise);
    * per batch, passed to ``forward`` as its second argument. With captum, give it
      as ``additional_forward_args=(encode(encoder, x0),)``: captum repeats it in
      step with the inputs it expands (integration steps, noise samples), so
      several explicands can share one ``attribute`` call.

    A reference passed to ``forward`` overrides the stored one.
    """

    def __init__(
        self,
        encoder: nn.Module,
        reference_repr: Tensor | None = None,
        similarity: Similarity = "dot",
    ) -> None:
        super().__init__()
        _check_similarity(similarity)
        self.encoder = encoder
        self.similarity = similarity
        self.register_buffer(
            "reference_repr", None if reference_repr is None else reference_repr.detach().clone()
        )

    def explicand_network(self) -> nn.Module:
        """The module that encodes the explicands (``encoder``)."""
        return self.encoder

    def explicand_representation(self, x: Tensor) -> Tensor:
        """h(x): (B, ...) -> (B, D), with gradients."""
        return self.encoder(x)

    def forward(self, x: Tensor, reference_repr: Tensor | None = None) -> Tensor:
        """f(x): (B, ...) -> (B,); ``reference_repr`` is (B, D), (1, D) or (D,)."""
        return self.score(self.explicand_representation(x), reference_repr)

    def score(self, representation: Tensor, reference_repr: Tensor | None = None) -> Tensor:
        """f as a function of the explicands' representations h(x): (B, D) -> (B,)."""
        return self._own_similarity(_prepare(representation, self.similarity), reference_repr)

    def _own_similarity(self, h: Tensor, reference_repr: Tensor | None) -> Tensor:
        """s(h(x), r) from prepared representations ``h`` (B, D) -> (B,)."""
        reference = self.reference_repr if reference_repr is None else reference_repr
        if reference is None:
            raise ValueError("no reference representation: pass it at construction or to forward")
        reference = reference.detach().to(h).reshape(-1, h.shape[1])
        if reference.shape[0] not in (1, h.shape[0]):
            raise ValueError(
                f"{reference.shape[0]} reference rows for a batch of {h.shape[0]} explicands"
            )
        return (h * _prepare(reference, self.similarity)).sum(dim=1)


class ContrastiveLabelFree(LabelFreeImportance):
    """Contrastive label-free target: own representation as corpus, minus a foil.

    COCOA's target with the one-element corpus ``{x0}`` (a baseline in the paper's
    experiments, Sec. 4)::

        f(x) = s(h(x), r) - 1/F sum_g s(h(x), H_F[g])                    -> (B,)

    ``r = h(x0)`` as in :class:`LabelFreeImportance` (same rules for supplying it).
    ``foil_repr`` (F, D) is detached and folded into its mean, a (D,) buffer (for
    cosine, the mean of the normalised rows). The default similarity is the cosine,
    as in :class:`ContrastiveCorpusSimilarity`.
    """

    def __init__(
        self,
        encoder: nn.Module,
        foil_repr: Tensor,
        reference_repr: Tensor | None = None,
        similarity: Similarity = "cosine",
    ) -> None:
        super().__init__(encoder, reference_repr, similarity)
        foil = _prepare(_as_set(foil_repr, "foil_repr"), similarity)
        self.register_buffer("foil_direction", foil.mean(dim=0))

    def score(self, representation: Tensor, reference_repr: Tensor | None = None) -> Tensor:
        """f as a function of the explicands' representations h(x): (B, D) -> (B,)."""
        h = _prepare(representation, self.similarity)
        return self._own_similarity(h, reference_repr) - h @ self.foil_direction.to(h)
