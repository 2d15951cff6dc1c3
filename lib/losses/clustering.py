"""Intermediate soft-clustering loss between student and teacher embeddings.

An auxiliary term of the self-distillation of Bougie et al. (ACML 2023): the
teacher's soft assignment of an image to ``m`` learnable centroids is the
target of the student's assignment of the same image. For embeddings
``x_b`` (student) and ``y_b`` (teacher) of a batch of ``B`` images, centroids
``c_1 .. c_m`` in ``R^d`` and a temperature ``tau``:

    u_b = (x_b - mean_b' x_b') / ||x_b - mean_b' x_b'||_2        (student, centred, unit norm)
    w_b = (y_b - mean_b' y_b') / ||y_b - mean_b' y_b'||_2        (teacher, likewise, no gradient)
    c^_j = c_j / ||c_j||_2

    q_s(b)_j = softmax_j( <u_b, c^_j> / tau )
    q_t(b)_j = softmax_j( <w_b, c^_j> / tau )                    (detached: a fixed target)

    L = 1/B sum_b H(q_t(b), q_s(b)) = -1/B sum_b sum_j q_t(b)_j log q_s(b)_j

Centring removes the component shared by the whole batch, so the assignment
depends on how an image differs from the others. Gradients reach the student
embeddings and the centroids (through the student's assignment), never the
teacher. ``L`` is a cross-entropy, so it equals the entropy of the target
when the two assignments agree: zero only for agreeing one-hot assignments.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SoftClusterLoss", "soft_cluster_cross_entropy"]


def soft_cluster_cross_entropy(p_teacher: Tensor, log_p_student: Tensor) -> Tensor:
    """``-1/B sum_b sum_j p_t(b)_j log p_s(b)_j`` for ``(B, m)`` inputs.

    Terms with ``p_t = 0`` count as 0 (the limit ``p log q -> 0``), so a one-hot
    target against ``log p_s = -inf`` off its class is finite.
    """
    if p_teacher.shape != log_p_student.shape or p_teacher.dim() != 2:
        raise ValueError(
            "soft_cluster_cross_entropy: expected two (B, m) tensors, got "
            f"{tuple(p_teacher.shape)} and {tuple(log_p_student.shape)}"
        )
    terms = torch.where(p_teacher > 0, p_teacher * log_p_student, 0.0)
    return -terms.sum(dim=1).mean()


def _centred_unit(z: Tensor) -> Tensor:
    return F.normalize(z - z.mean(dim=0, keepdim=True), dim=1)


class SoftClusterLoss(nn.Module):
    """Cross-entropy from the teacher's to the student's soft centroid assignment.

    Args:
        n_clusters: ``m``, the number of learnable centroids.
        dim: ``d``, the embedding size.
        temperature: ``tau`` of the assignment softmax.

    ``forward(student (B, d), teacher (B, d)) -> scalar`` with ``B >= 2`` (the
    batch mean is subtracted). ``assign(z)`` gives the ``(B, m)`` soft assignment.
    Centroids start as standard normal vectors (only their direction matters).
    """

    def __init__(self, n_clusters: int, dim: int, temperature: float = 0.1) -> None:
        super().__init__()
        if n_clusters < 1 or dim < 1:
            raise ValueError(
                f"SoftClusterLoss: n_clusters and dim must be >= 1, got {n_clusters} and {dim}"
            )
        if not temperature > 0:
            raise ValueError(f"SoftClusterLoss: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.centroids = nn.Parameter(torch.randn(n_clusters, dim))

    def _logits(self, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.centroids.shape[1] or z.shape[0] < 2:
            raise ValueError(
                f"SoftClusterLoss: embeddings must be (B, {self.centroids.shape[1]}) with "
                f"B >= 2, got {tuple(z.shape)}"
            )
        centroids = F.normalize(self.centroids, dim=1).to(z.dtype)
        return _centred_unit(z) @ centroids.T / self.temperature

    def assign(self, z: Tensor) -> Tensor:
        """Soft assignment ``q(b)_j`` of centred, normalised embeddings ``(B, d) -> (B, m)``."""
        return F.softmax(self._logits(z), dim=1)

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        if student.shape != teacher.shape:
            raise ValueError(
                f"SoftClusterLoss: student {tuple(student.shape)} and teacher "
                f"{tuple(teacher.shape)} must have the same shape"
            )
        log_q_student = F.log_softmax(self._logits(student), dim=1)
        with torch.no_grad():
            q_teacher = F.softmax(self._logits(teacher.detach()), dim=1)
        return soft_cluster_cross_entropy(q_teacher, log_q_student)

    def extra_repr(self) -> str:
        m, d = self.centroids.shape
        return f"n_clusters={m}, dim={d}, temperature={self.temperature}"
