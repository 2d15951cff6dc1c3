"""DINO loss, schedules, teacher EMA, head and collapse indicators (lib.losses.dino,
lib.models.dino_head) against loops and closed forms written from Caron et al. (ICCV 2021)."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from lib.losses.dino import (
    DinoLoss,
    collapse_indicators,
    teacher_temperature_schedule,
    update_teacher,
)
from lib.models.dino_head import DinoHead


def softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def naive_dino(student, teacher, center, tau_t, tau_s) -> float:
    """Eq. 2-3 of Caron et al.: loop over (teacher view i, student view j != i), images, classes."""
    s, t, c = student.tolist(), teacher.tolist(), center.tolist()
    n_student, n_teacher, batch, k = len(s), len(t), len(s[0]), len(c)
    total, n_pairs = 0.0, 0
    for i in range(n_teacher):
        for j in range(n_student):
            if j == i:
                continue
            pair = 0.0
            for b in range(batch):
                p_t = softmax([(t[i][b][q] - c[q]) / tau_t for q in range(k)])
                p_s = softmax([s[j][b][q] / tau_s for q in range(k)])
                pair += -sum(p_t[q] * math.log(p_s[q]) for q in range(k))
            total += pair / batch
            n_pairs += 1
    return total / n_pairs


@pytest.mark.parametrize(
    "n_student, n_teacher, tau_t, tau_s",
    [(2, 2, 0.04, 0.1), (6, 2, 0.07, 0.1), (3, 1, 0.5, 0.2), (4, 3, 1.0, 1.0)],
)
def test_loss_matches_naive_pair_loop(n_student, n_teacher, tau_t, tau_s):
    gen = torch.Generator().manual_seed(n_student * 10 + n_teacher)
    batch, k = 3, 5
    student = torch.randn(n_student, batch, k, generator=gen, dtype=torch.float64)
    teacher = torch.randn(n_teacher, batch, k, generator=gen, dtype=torch.float64)
    loss = DinoLoss(k, teacher_temperatures=tau_t, student_temperature=tau_s).double()
    center = torch.randn(k, generator=gen, dtype=torch.float64)
    loss.center.copy_(center)
    expected = naive_dino(student, teacher, center, tau_t, tau_s)
    assert loss(student, teacher, epoch=0).item() == pytest.approx(expected, rel=1e-12)
    # Sequences of (B, K) views give the same loss (the centre reset to the same value).
    loss.center.copy_(center)
    assert loss(list(student), list(teacher), epoch=0).item() == pytest.approx(expected, rel=1e-12)


def test_teacher_temperature_follows_the_epoch():
    gen = torch.Generator().manual_seed(1)
    student = torch.randn(4, 3, 6, generator=gen, dtype=torch.float64)
    teacher = torch.randn(2, 3, 6, generator=gen, dtype=torch.float64)
    schedule = teacher_temperature_schedule(5, warmup_temp=0.04, temp=0.07, warmup_epochs=3)
    loss = DinoLoss(6, teacher_temperatures=schedule).double().eval()  # eval: centre stays 0
    zero = torch.zeros(6, dtype=torch.float64)
    for epoch, tau_t in [(0, 0.04), (1, 0.05), (3, 0.07), (50, 0.07)]:
        assert loss.teacher_temperature(epoch) == pytest.approx(tau_t, rel=1e-12)
        assert loss(student, teacher, epoch).item() == pytest.approx(
            naive_dino(student, teacher, zero, tau_t, 0.1), rel=1e-12
        )
    assert torch.equal(loss.center, zero)


def test_center_update_matches_closed_form():
    gen = torch.Generator().manual_seed(2)
    k, m = 7, 0.9
    loss = DinoLoss(k, teacher_temperatures=0.05, center_momentum=m).double()
    batch_means, losses, centers_before = [], [], []
    for _ in range(4):
        student = torch.randn(5, 4, k, generator=gen, dtype=torch.float64)
        teacher = torch.randn(2, 4, k, generator=gen, dtype=torch.float64) + 3.0
        centers_before.append(loss.center.clone())
        losses.append((loss(student, teacher, 0).item(), student, teacher))
        batch_means.append(teacher.mean(dim=(0, 1)))
    # c_n = m^n c_0 + (1 - m) sum_{r=1..n} m^(n-r) mean_r, with c_0 = 0.
    n = len(batch_means)
    expected = sum((1 - m) * m ** (n - r) * batch_means[r - 1] for r in range(1, n + 1))
    torch.testing.assert_close(loss.center, expected, rtol=1e-12, atol=1e-12)
    # Each call used the centre as it was before that call's update.
    for (value, student, teacher), center in zip(losses, centers_before, strict=True):
        assert value == pytest.approx(naive_dino(student, teacher, center, 0.05, 0.1), rel=1e-12)
    assert not torch.equal(centers_before[1], centers_before[0])


def test_gradient_reaches_the_student_only():
    gen = torch.Generator().manual_seed(3)
    student = torch.randn(4, 3, 8, generator=gen).requires_grad_(True)
    teacher = torch.randn(2, 3, 8, generator=gen).requires_grad_(True)
    DinoLoss(8)(student, teacher, 0).backward()
    assert teacher.grad is None
    assert student.grad.abs().sum() > 0


def test_loss_stays_float32_under_autocast():
    gen = torch.Generator().manual_seed(9)
    student = torch.randn(6, 16, 64, generator=gen)
    teacher = torch.randn(2, 16, 64, generator=gen)
    loss = DinoLoss(64).eval()
    reference = loss(student, teacher, 0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss(student.bfloat16(), teacher.bfloat16(), 0)
    assert mixed.dtype == torch.float32
    # Only the bf16 rounding of the inputs remains (an einsum in bf16 errs by ~1e-3).
    expected = loss(student.bfloat16().float(), teacher.bfloat16().float(), 0)
    assert mixed.item() == pytest.approx(expected.item(), rel=1e-6)
    assert mixed.item() == pytest.approx(reference.item(), rel=1e-2)


def test_identical_teacher_and_student_is_a_minimum_over_students():
    """With tau_s = tau_t, centre 0 and two views that agree, the loss is the teacher's
    entropy (cross-entropy of a distribution with itself); any other student scores higher."""
    gen = torch.Generator().manual_seed(4)
    view = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    teacher = torch.stack([view, view])
    loss = DinoLoss(5, teacher_temperatures=0.3, student_temperature=0.3).double().eval()
    p = torch.softmax(view / 0.3, dim=1)
    entropy = -(p * p.log()).sum(dim=1).mean().item()
    assert loss(teacher, teacher, 0).item() == pytest.approx(entropy, rel=1e-12)
    other = teacher + 0.1 * torch.randn(2, 6, 5, generator=gen, dtype=torch.float64)
    assert loss(other, teacher, 0).item() > entropy


@pytest.mark.parametrize(
    "student_shape, teacher_shape, message",
    [
        ((2, 3, 5), (3, 3, 5), r"teacher has 3 views but the student only 2"),
        ((4, 3, 5), (2, 4, 5), r"student \(4, 3, 5\) and teacher \(2, 4, 5\)"),
        ((4, 3, 6), (2, 3, 6), r"K = out_dim = 5"),
        ((1, 3, 5), (1, 3, 5), r"no pair"),
        ((12, 5), (2, 3, 5), r"must be \(V, B, K\), got shape \(12, 5\)"),
    ],
)
def test_loss_shape_errors(student_shape, teacher_shape, message):
    with pytest.raises(ValueError, match=message):
        DinoLoss(5)(torch.zeros(student_shape), torch.zeros(teacher_shape), 0)


def test_loss_argument_errors():
    for bad in (0.0, [0.04, -1.0], []):
        with pytest.raises(ValueError, match="teacher_temperatures"):
            DinoLoss(5, teacher_temperatures=bad)
    with pytest.raises(ValueError, match="student_temperature"):
        DinoLoss(5, student_temperature=0.0)
    with pytest.raises(ValueError, match="center_momentum"):
        DinoLoss(5, center_momentum=1.5)
    with pytest.raises(ValueError, match="epoch"):
        DinoLoss(5).teacher_temperature(-1)
    with pytest.raises(ValueError, match=r"must all be \(B, K\)"):
        DinoLoss(5)([torch.zeros(3, 5), torch.zeros(4, 5)], torch.zeros(1, 3, 5), 0)
    assert "student_temperature=0.1" in repr(DinoLoss(5))


def test_teacher_temperature_schedule():
    np.testing.assert_allclose(
        teacher_temperature_schedule(6, warmup_temp=0.04, temp=0.07, warmup_epochs=3),
        [0.04, 0.05, 0.06, 0.07, 0.07, 0.07],
        rtol=1e-14,
    )
    np.testing.assert_array_equal(teacher_temperature_schedule(3), [0.04, 0.04, 0.04])
    with pytest.raises(ValueError, match="warmup_epochs"):
        teacher_temperature_schedule(3, warmup_epochs=4)
    with pytest.raises(ValueError, match="temperatures must be > 0"):
        teacher_temperature_schedule(3, temp=0.0)


def small_net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def test_update_teacher_momentum_zero_copies_one_keeps():
    torch.manual_seed(5)
    student, teacher = small_net(), small_net()
    student.train()(torch.randn(8, 4))  # non-trivial BatchNorm running statistics
    before = copy.deepcopy(teacher.state_dict())

    update_teacher(student, teacher, momentum=1.0)
    for name, value in teacher.named_parameters():
        assert torch.equal(value, before[name])
    for name, value in teacher.named_buffers():  # buffers are copied whatever the momentum
        assert torch.equal(value, student.state_dict()[name])

    teacher.load_state_dict(before)
    update_teacher(student, teacher, momentum=0.0)
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, student.state_dict()[name])

    teacher.load_state_dict(before)
    update_teacher(student, teacher, momentum=0.75)
    for name, value in teacher.named_parameters():
        expected = 0.75 * before[name] + 0.25 * student.state_dict()[name]
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7)
        assert not value.requires_grad or value.grad is None


def test_update_teacher_errors():
    with pytest.raises(ValueError, match="momentum"):
        update_teacher(small_net(), small_net(), 1.5)
    with pytest.raises(ValueError, match="differ"):
        update_teacher(small_net(), nn.Sequential(nn.Linear(4, 6)), 0.5)


def test_head_shapes_and_unit_norm_last_layer():
    torch.manual_seed(6)
    head = DinoHead(in_dim=12, out_dim=40, hidden_dim=32, bottleneck_dim=8, n_layers=3)
    x = torch.randn(10, 12)
    logits = head(x)
    assert logits.shape == (10, 40)
    # Unit-norm prototypes and a unit-norm code: every logit is a cosine.
    assert logits.abs().max() <= 1 + 1e-6
    gain = head.last_layer.parametrizations.weight.original0
    assert not gain.requires_grad
    assert head.last_layer.bias is None
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12, 32), (32, 32), (32, 8)]
    assert sum(isinstance(m, nn.GELU) for m in head.mlp) == 2
    weights = torch.cat([m.weight.flatten() for m in linears])
    assert weights.abs().max() <= 0.04 and 0.012 < weights.std() < 0.022
    assert all((m.bias == 0).all() for m in linears)

    # Plain gradient steps on every trainable parameter (an optimiser would import torch._dynamo).
    for _ in range(3):
        head.zero_grad()
        (-head(x)[:, 0].sum() + head(x)[:, 1:].pow(2).sum()).backward()
        with torch.no_grad():
            for p in head.parameters():
                if p.requires_grad:
                    p -= 10.0 * p.grad
    row_norms = head.last_layer.weight.norm(dim=1)
    torch.testing.assert_close(row_norms, torch.ones(40))
    torch.testing.assert_close(gain, torch.ones(40, 1), rtol=0, atol=0)
    assert DinoHead(12, 7, n_layers=1, bottleneck_dim=5)(x).shape == (10, 7)
    with pytest.raises(ValueError, match="n_layers"):
        DinoHead(12, 7, n_layers=0)


def test_head_batch_norm_standardises_each_hidden_unit_over_the_batch():
    torch.manual_seed(0)
    head = DinoHead(12, 40, hidden_dim=32, bottleneck_dim=8, n_layers=3, use_bn=True)
    norms = [m for m in head.mlp if isinstance(m, nn.BatchNorm1d)]
    assert [m.num_features for m in norms] == [32, 32]
    # Inputs with a common offset (as a map encoder's first embeddings): each hidden unit is standardised.
    x = 3.0 + torch.randn(64, 12)
    seen = {}
    norms[0].register_forward_hook(lambda m, i, o: seen.update(out=o))
    head(x)
    assert torch.allclose(seen["out"].mean(0), torch.zeros(32), atol=1e-5)
    assert torch.allclose(seen["out"].var(0, unbiased=False), torch.ones(32), atol=1e-2)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in DinoHead(12, 40, hidden_dim=32, bottleneck_dim=8).mlp)


def test_head_teacher_copy_follows_student():
    torch.manual_seed(7)
    student = DinoHead(6, 10, hidden_dim=16, bottleneck_dim=4)
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.1)
    update_teacher(student, teacher, momentum=0.0)
    x = torch.randn(3, 6)
    torch.testing.assert_close(teacher(x), student(x), rtol=0, atol=0)


def test_collapse_to_one_dimension():
    k = 8
    logits = torch.zeros(2, 16, k)
    logits[..., 3] = 50.0  # every image: the same sharp target
    stats = collapse_indicators(logits, torch.zeros(k), 0.04, torch.ones(16, 5) * 2.0)
    assert stats["teacher_entropy"] == pytest.approx(0.0, abs=1e-9)
    assert stats["batch_mean_entropy"] == pytest.approx(0.0, abs=1e-9)
    assert stats["kl_to_batch_mean"] == pytest.approx(0.0, abs=1e-9)
    assert stats["embedding_std"] == pytest.approx(0.0, abs=1e-12)
    assert stats["log_k"] == pytest.approx(math.log(k))


def test_collapse_to_uniform_and_the_center():
    k = 8
    logits = torch.randn(16, 1) + torch.zeros(16, k)  # constant across classes in each row
    stats = collapse_indicators(logits, torch.zeros(k), 0.04, torch.randn(16, 5))
    assert stats["teacher_entropy"] == pytest.approx(math.log(k), rel=1e-9)
    assert stats["batch_mean_entropy"] == pytest.approx(math.log(k), rel=1e-9)
    assert stats["kl_to_batch_mean"] == pytest.approx(0.0, abs=1e-9)
    # The centre is subtracted: a dominant class that the centre removes is uniform again.
    spiked = torch.zeros(16, k)
    spiked[:, 2] = 30.0
    centered = collapse_indicators(spiked, spiked[0], 0.04, torch.randn(16, 5))
    assert centered["teacher_entropy"] == pytest.approx(math.log(k), rel=1e-9)


def test_healthy_teacher_and_embeddings():
    gen = torch.Generator().manual_seed(8)
    k, n, d = 16, 8, 64
    logits = torch.zeros(n, k)
    logits[torch.arange(n), torch.arange(n)] = 40.0  # sharp, distinct targets
    embeddings = torch.randn(4096, d, generator=gen, dtype=torch.float64)
    stats = collapse_indicators(logits, torch.zeros(k), 0.04, embeddings)
    assert stats["teacher_entropy"] == pytest.approx(0.0, abs=1e-9)
    assert stats["batch_mean_entropy"] == pytest.approx(math.log(n), rel=1e-9)
    assert stats["kl_to_batch_mean"] == pytest.approx(math.log(n), rel=1e-9)
    # Uniform on the sphere: each coordinate has variance 1 / d.
    assert stats["embedding_std"] == pytest.approx(1 / math.sqrt(d), rel=0.02)
    # Against a direct computation of the per-dimension std.
    unit = embeddings / embeddings.norm(dim=1, keepdim=True)
    direct = np.std(unit.numpy(), axis=0, ddof=1).mean()
    assert stats["embedding_std"] == pytest.approx(direct, rel=1e-12)


def test_collapse_indicator_errors():
    with pytest.raises(ValueError, match=r"center \(3,\)"):
        collapse_indicators(torch.zeros(4, 5), torch.zeros(3), 0.04, torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"N >= 2, got \(1, 2\)"):
        collapse_indicators(torch.zeros(4, 5), torch.zeros(5), 0.04, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="tau_t"):
        collapse_indicators(torch.zeros(4, 5), torch.zeros(5), 0.0, torch.zeros(4, 2))


def test_momentum_for_share_leaves_that_share_of_the_initialisation_in_a_naive_ema():
    from lib.losses.dino import initial_share, momentum_for_share
    from lib.training import cosine_value

    steps = 120
    start = momentum_for_share(steps, 0.01)
    # A scalar teacher at 1 following a student at 0: what is left of the 1 is the initial share.
    teacher = 1.0
    for t in range(steps):
        m = cosine_value(start, 1.0, t, steps - 1)
        teacher = m * teacher + (1 - m) * 0.0
    assert teacher == pytest.approx(0.01, rel=1e-6) == initial_share(start, steps)
    assert momentum_for_share(10 * steps, 0.01) > start  # longer runs start closer to 1
    with pytest.raises(ValueError, match="share"):
        momentum_for_share(steps, 1.5)


def test_update_teacher_can_keep_the_teachers_own_buffers():
    student, teacher = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    student.running_mean.fill_(2.0)
    teacher.running_mean.fill_(-1.0)
    update_teacher(student, teacher, momentum=0.5, copy_buffers=False)
    assert torch.equal(teacher.running_mean, torch.full((3,), -1.0))
    update_teacher(student, teacher, momentum=0.5)
    assert torch.equal(teacher.running_mean, torch.full((3,), 2.0))


def test_teacher_temperature_warms_up_linearly_as_dino():
    # Caron et al., App. B: 0.04 -> 0.07 linearly over the warm-up epochs, then 0.07.
    schedule = teacher_temperature_schedule(10, warmup_temp=0.04, temp=0.07, warmup_epochs=3)
    np.testing.assert_allclose(schedule, [0.04, 0.05, 0.06] + [0.07] * 7)
