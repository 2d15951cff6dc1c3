"""Cross-modality attentional fusion (MuseCL, Yong and Zhou, IJCAI 2024, Sec. 3.3).

For ``M`` modal embeddings ``e_1 .. e_M`` of one region, each in R^D, additive
(Bahdanau-style) attention with parameters shared across modalities::

    s_m = u^T tanh(W e_m + b),      alpha = softmax(s_1 .. s_M),      f = sum_m alpha_m e_m

so the weights are positive and sum to one, and ``M`` identical inputs return
that input whatever the parameters. The reference code fuses the aerial and
the street-level embedding this way; :meth:`AdditiveAttentionFusion.forward`
returns the fused embedding and, with ``return_weights``, the ``(B, M)``
weights (the notebook maps them per region).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["AdditiveAttentionFusion"]


class AdditiveAttentionFusion(nn.Module):
    """``f = sum_m softmax_m(u^T tanh(W e_m + b)) e_m`` over the modalities of each row (module docstring)."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or dim
        self.project = nn.Linear(dim, hidden)  # W, b
        self.score = nn.Linear(hidden, 1, bias=False)  # u
        nn.init.xavier_uniform_(self.project.weight)
        nn.init.zeros_(self.project.bias)
        nn.init.xavier_uniform_(self.score.weight)

    def forward(self, embeddings: Tensor, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """``embeddings`` (B, M, D) -> fused (B, D) [and weights (B, M)]."""
        if embeddings.dim() != 3 or embeddings.shape[-1] != self.project.in_features:
            raise ValueError(f"embeddings must be (batch, modalities, {self.project.in_features}), "
                             f"got shape {tuple(embeddings.shape)}")
        scores = self.score(torch.tanh(self.project(embeddings))).squeeze(-1)  # (B, M)
        weights = torch.softmax(scores, dim=1)
        fused = (weights.unsqueeze(-1) * embeddings).sum(dim=1)
        return (fused, weights) if return_weights else fused
