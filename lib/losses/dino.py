"""DINO self-distillation (Caron et al., "Emerging Properties in Self-Supervised
Vision Transformers", ICCV 2021), as used for map images by Bougie et al.
("Lost and Found: How Self-Supervised Learning Helps GPS Coordinates Find Their
Way", ACML 2023).

Loss (Caron et al., Sec. 3.1, Eq. 2-3, Algorithm 1). A student ``g_s`` sees
``V_s`` views of each of ``B`` images and a teacher ``g_t`` sees the first
``V_t <= V_s`` of them (the global views, in the same order). With output
logits ``s_j, t_i`` in ``R^K``, the teacher's centre ``c`` and temperatures
``tau_t, tau_s``:

    P_t(i) = softmax((t_i - c) / tau_t)          (centred and sharpened)
    log P_s(j) = log_softmax(s_j / tau_s)

    L = 1 / |pairs| * sum_{(i, j) in pairs} mean_b [ -sum_k P_t(i)_bk log P_s(j)_bk ]

over the pairs ``{(i, j) : 0 <= i < V_t, 0 <= j < V_s, j != i}`` (a global view
is never its own target), so ``|pairs| = V_t V_s - V_t``. The teacher receives
no gradient. After each training call the centre follows the batch mean of the
teacher logits (Eq. 4):

    c <- m c + (1 - m) * mean_{i, b} t_ib

with the mean over all processes when ``torch.distributed`` is initialised.

Schedules (Caron et al., Sec. 3.1 and App. B). The teacher is an exponential
moving average of the student, ``theta_t <- lambda theta_t + (1 - lambda)
theta_s`` (:func:`update_teacher`), with ``lambda`` following a cosine from
0.996 to 1 over training (:func:`lib.training.cosine_value`, the loop's one
cosine); ``tau_t`` warms up linearly (0.04 -> 0.04 .. 0.07) and then stays
constant (:func:`teacher_temperature_schedule`).

Collapse (Caron et al., Sec. 5.3). Collapse to one dimension gives a teacher
entropy ``H(P_t)`` near 0 *and* a batch-mean distribution of entropy near 0;
collapse to the uniform distribution gives both near ``log K``. A healthy
teacher has a low per-image entropy but a high entropy of the batch mean; the
gap ``H(mean P_t) - mean H(P_t) = mean KL(P_t || mean P_t)`` measures it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DinoLoss",
    "collapse_indicators",
    "initial_share",
    "momentum_for_share",
    "teacher_temperature_schedule",
    "update_teacher",
]


def _stack_views(views: Tensor | Sequence[Tensor], name: str) -> Tensor:
    """``(V, B, K)`` from a stacked tensor or a sequence of ``(B, K)`` tensors."""
    if not isinstance(views, Tensor):
        if len(views) == 0:
            raise ValueError(f"DinoLoss: {name} has no views")
        shapes = {tuple(v.shape) for v in views}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(
                f"DinoLoss: {name} views must all be (B, K), got shapes "
                f"{[tuple(v.shape) for v in views]}"
            )
        views = torch.stack(list(views))
    if views.dim() != 3:
        raise ValueError(f"DinoLoss: {name} must be (V, B, K), got shape {tuple(views.shape)}")
    # Softmax in at least float32, also when the head ran in bf16.
    return views.to(torch.promote_types(views.dtype, torch.float32))


def _all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum over processes when torch.distributed is running, else unchanged."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class DinoLoss(nn.Module):
    """DINO cross-entropy between teacher and student views, with the teacher centre.

    Args:
        out_dim: ``K``, the number of head outputs (the centre's size).
        teacher_temperatures: ``tau_t`` per epoch, e.g. from
            :func:`teacher_temperature_schedule`; a float is a constant
            schedule. Epochs past the end use the last value.
        student_temperature: ``tau_s``.
        center_momentum: ``m`` of the centre's moving average.

    ``forward(student (V_s, B, K), teacher (V_t, B, K), epoch) -> scalar``; the
    views may also be given as sequences of ``(B, K)`` tensors, and the first
    ``V_t`` student views must be the teacher's views in the same order. In
    training mode (the default) each call updates the centre *after* computing
    the loss; in ``eval()`` mode it is left unchanged.
    """

    center: Tensor

    def __init__(
        self,
        out_dim: int,
        teacher_temperatures: float | Sequence[float] | np.ndarray = 0.04,
        student_temperature: float = 0.1,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        if out_dim < 1:
            raise ValueError(f"DinoLoss: out_dim must be >= 1, got {out_dim}")
        schedule = np.atleast_1d(np.asarray(teacher_temperatures, dtype=np.float64))
        if schedule.ndim != 1 or schedule.size == 0 or not (schedule > 0).all():
            raise ValueError(
                "DinoLoss: teacher_temperatures must be a positive float or a non-empty "
                f"1-d schedule of positive floats, got {teacher_temperatures!r}"
            )
        if not student_temperature > 0:
            raise ValueError(
                f"DinoLoss: student_temperature must be > 0, got {student_temperature}"
            )
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"DinoLoss: center_momentum must be in [0, 1], got {center_momentum}")
        self.out_dim = int(out_dim)
        self.teacher_temperatures = tuple(float(t) for t in schedule)
        self.student_temperature = float(student_temperature)
        self.center_momentum = float(center_momentum)
        self.register_buffer("center", torch.zeros(out_dim))

    def teacher_temperature(self, epoch: int) -> float:
        """``tau_t`` at ``epoch`` (the last scheduled value after the schedule ends)."""
        if epoch < 0:
            raise ValueError(f"DinoLoss: epoch must be >= 0, got {epoch}")
        return self.teacher_temperatures[min(int(epoch), len(self.teacher_temperatures) - 1)]

    def forward(
        self,
        student: Tensor | Sequence[Tensor],
        teacher: Tensor | Sequence[Tensor],
        epoch: int,
    ) -> Tensor:
        s = _stack_views(student, "student")
        t = _stack_views(teacher, "teacher").detach()
        n_student, batch, k = s.shape
        n_teacher = t.shape[0]
        if t.shape[1:] != (batch, k) or k != self.out_dim:
            raise ValueError(
                f"DinoLoss: student {tuple(s.shape)} and teacher {tuple(t.shape)} must share "
                f"(B, K) with K = out_dim = {self.out_dim}"
            )
        if n_teacher > n_student:
            raise ValueError(
                f"DinoLoss: the teacher has {n_teacher} views but the student only "
                f"{n_student}; the student must also see the teacher's global views"
            )
        n_pairs = n_teacher * n_student - n_teacher
        if n_pairs == 0:
            raise ValueError("DinoLoss: one view each leaves no pair with j != i")

        tau_t = self.teacher_temperature(epoch)
        # Autocast would run the einsum in bf16/fp16; the loss stays in float32 (or float64).
        with torch.autocast(s.device.type, enabled=False):
            p_teacher = F.softmax((t - self.center) / tau_t, dim=-1)  # (V_t, B, K)
            log_p_student = F.log_softmax(s / self.student_temperature, dim=-1)  # (V_s, B, K)
            # Batch-mean cross-entropy of every (teacher view i, student view j): (V_t, V_s).
            cross_entropy = -torch.einsum("ibk,jbk->ij", p_teacher, log_p_student) / batch
        same_view = torch.eye(n_teacher, n_student, dtype=torch.bool, device=s.device)
        loss = cross_entropy.masked_fill(same_view, 0.0).sum() / n_pairs

        if self.training:
            self.update_center(t)
        return loss

    @torch.no_grad()
    def update_center(self, teacher: Tensor) -> None:
        """``c <- m c + (1 - m) mean_{i, b} t_ib``, the mean over all processes (Eq. 4)."""
        rows = teacher.reshape(-1, teacher.shape[-1]).to(self.center.dtype)
        # One all-reduce for the sum and the count, so unequal batches are weighted right.
        stats = torch.cat([rows.sum(dim=0), rows.new_tensor([rows.shape[0]])])
        stats = _all_reduce_sum(stats)
        batch_center = stats[:-1] / stats[-1]
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)

    def extra_repr(self) -> str:
        tau_t = self.teacher_temperatures
        shown = f"{tau_t[0]}"
        if len(tau_t) > 1:
            shown += f"..{tau_t[-1]} ({len(tau_t)} epochs)"
        return (
            f"out_dim={self.out_dim}, teacher_temperature={shown}, "
            f"student_temperature={self.student_temperature}, "
            f"center_momentum={self.center_momentum}"
        )


def teacher_temperature_schedule(
    epochs: int,
    warmup_temp: float = 0.04,
    temp: float = 0.04,
    warmup_epochs: int = 0,
) -> np.ndarray:
    """``tau_t`` per epoch: linear from ``warmup_temp`` towards ``temp``, then ``temp``.

    Epoch ``e`` has ``warmup_temp + (temp - warmup_temp) * e / warmup_epochs`` for
    ``e < warmup_epochs`` and ``temp`` from ``warmup_epochs`` on (Caron et al.,
    App. B: 0.04 warmed up to 0.04 .. 0.07 over 30 epochs). Float64, length
    ``epochs``.
    """
    if epochs < 1:
        raise ValueError(f"teacher_temperature_schedule: epochs must be >= 1, got {epochs}")
    if not 0 <= warmup_epochs <= epochs:
        raise ValueError(
            "teacher_temperature_schedule: warmup_epochs must be in "
            f"[0, epochs={epochs}], got {warmup_epochs}"
        )
    if not (warmup_temp > 0 and temp > 0):
        raise ValueError(
            "teacher_temperature_schedule: temperatures must be > 0, got "
            f"warmup_temp={warmup_temp}, temp={temp}"
        )
    ramp = warmup_temp + (temp - warmup_temp) * np.arange(warmup_epochs) / max(warmup_epochs, 1)
    return np.concatenate([ramp, np.full(epochs - warmup_epochs, float(temp))])


@torch.no_grad()
def update_teacher(student: nn.Module, teacher: nn.Module, momentum: float, copy_buffers: bool = True) -> None:
    """EMA of the parameters, ``theta_t <- m theta_t + (1 - m) theta_s``; buffers copied unless ``copy_buffers``
    is False.

    Parameters and buffers are matched by name, so pass the bare student (e.g.
    ``ddp_model.module``), not a wrapper that prefixes the names. ``m = 0``
    copies the student's parameters exactly and ``m = 1`` leaves the teacher
    unchanged. With ``copy_buffers=False`` the teacher keeps its own buffers
    (batch-norm running statistics accumulated from its own forward passes in
    training mode), as official DINO does; the default copies the student's.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"update_teacher: momentum must be in [0, 1], got {momentum}")
    student_params = dict(student.named_parameters())
    teacher_params = dict(teacher.named_parameters())
    student_buffers = dict(student.named_buffers())
    teacher_buffers = dict(teacher.named_buffers())
    differing = sorted(
        (student_params.keys() ^ teacher_params.keys())
        | (student_buffers.keys() ^ teacher_buffers.keys())
    )
    if differing:
        raise ValueError(
            f"update_teacher: student and teacher differ in parameters or buffers {differing[:5]}"
        )
    names = list(teacher_params)
    teacher_tensors = [teacher_params[n] for n in names]
    student_tensors = [student_params[n].detach() for n in names]
    if teacher_tensors:
        torch._foreach_mul_(teacher_tensors, momentum)
        torch._foreach_add_(teacher_tensors, student_tensors, alpha=1.0 - momentum)
    if copy_buffers:
        for name, buffer in teacher_buffers.items():
            buffer.copy_(student_buffers[name])


def initial_share(start: float, total_steps: int, end: float = 1.0) -> float:
    """The share of its initial weights the teacher keeps after ``total_steps`` EMA steps whose momenta follow
    the cosine from ``start`` to ``end`` (step t of 0 .. N - 1 at ``cosine_value(start, end, t, N - 1)``):

        share = prod_t lambda_t   (each EMA step keeps lambda_t of what the teacher was)
    """
    if total_steps < 1:
        raise ValueError(f"initial_share: total_steps must be >= 1, got {total_steps}")
    t = np.arange(total_steps)
    momenta = end + (start - end) * 0.5 * (1.0 + np.cos(np.pi * t / max(total_steps - 1, 1)))
    return float(np.prod(momenta))


def momentum_for_share(total_steps: int, share: float, end: float = 1.0) -> float:
    """The starting momentum whose cosine schedule over ``total_steps`` leaves the teacher ``share`` of its
    initialisation (:func:`initial_share`), found by bisection; DINO's 0.996 over ~10^5 steps leaves
    about e^-200. A rule set by the number of steps, so a short run gets a teacher that has moved."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"momentum_for_share: share must lie in (0, 1), got {share}")
    if initial_share(0.0, total_steps, end) > share:
        raise ValueError(f"momentum_for_share: {total_steps} steps cannot bring the initial share to {share}")
    low, high = 0.0, end
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if initial_share(middle, total_steps, end) < share else (low, middle)
    return low


@torch.no_grad()
def collapse_indicators(
    teacher_logits: Tensor,
    center: Tensor,
    tau_t: float,
    embeddings: Tensor,
) -> dict[str, float]:
    """Collapse diagnostics of a teacher batch (Caron et al., Sec. 5.3).

    Args:
        teacher_logits: ``(N, K)`` or ``(V, B, K)`` teacher head outputs.
        center: ``(K,)`` the loss's centre.
        tau_t: the teacher temperature.
        embeddings: ``(N', D)`` backbone embeddings, ``N' >= 2``.

    Returns:
        ``teacher_entropy``: ``mean_n H(P_t(n))`` of the centred, sharpened
        distributions (0 for one-hot targets, ``log K`` for uniform ones);
        ``batch_mean_entropy``: ``H(mean_n P_t(n))`` (near 0 when every image
        gets the same one-hot target); ``kl_to_batch_mean``: their difference,
        ``mean_n KL(P_t(n) || mean P_t)`` (0 for either kind of collapse);
        ``embedding_std``: the per-dimension standard deviation of the
        L2-normalised embeddings, averaged over dimensions (0 when all
        embeddings point the same way, about ``1 / sqrt(D)`` when spread
        uniformly on the sphere); ``log_k``: ``log K``, the entropy of the
        uniform distribution, for scale. All entropies in nats.
    """
    if not tau_t > 0:
        raise ValueError(f"collapse_indicators: tau_t must be > 0, got {tau_t}")
    logits = teacher_logits.reshape(-1, teacher_logits.shape[-1]).double()
    if center.shape != logits.shape[-1:]:
        raise ValueError(
            f"collapse_indicators: center {tuple(center.shape)} does not match teacher logits "
            f"{tuple(teacher_logits.shape)}"
        )
    if embeddings.dim() != 2 or embeddings.shape[0] < 2:
        raise ValueError(
            f"collapse_indicators: embeddings must be (N, D) with N >= 2, got "
            f"{tuple(embeddings.shape)}"
        )
    log_p = F.log_softmax((logits - center.double()) / tau_t, dim=-1)
    p = log_p.exp()
    teacher_entropy = -(p * log_p).sum(dim=-1).mean()
    p_mean = p.mean(dim=0)
    batch_mean_entropy = -torch.special.xlogy(p_mean, p_mean).sum()
    spread = F.normalize(embeddings.double(), dim=1).std(dim=0).mean()
    return {
        "teacher_entropy": teacher_entropy.item(),
        "batch_mean_entropy": batch_mean_entropy.item(),
        "kl_to_batch_mean": max(batch_mean_entropy.item() - teacher_entropy.item(), 0.0),
        "embedding_std": spread.item(),
        "log_k": math.log(logits.shape[-1]),
    }
