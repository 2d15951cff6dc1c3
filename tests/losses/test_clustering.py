"""Soft-clustering loss (lib.losses.clustering) against a loop written from its formula."""

import math

import pytest
import torch

from lib.losses.clustering import SoftClusterLoss, soft_cluster_cross_entropy


def naive_cluster_loss(student, teacher, centroids, temperature) -> float:
    """Centre, normalise, assign, cross-entropy: one image and one centroid at a time."""

    def unit(v):
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v]

    def centred_units(rows):
        mean = [sum(col) / len(rows) for col in zip(*rows, strict=True)]
        return [unit([x - m for x, m in zip(row, mean, strict=True)]) for row in rows]

    def assignment(z, cs):
        logits = [sum(a * b for a, b in zip(z, c, strict=True)) / temperature for c in cs]
        exps = [math.exp(v) for v in logits]
        return [e / sum(exps) for e in exps]

    cs = [unit(c) for c in centroids.tolist()]
    u, w = centred_units(student.tolist()), centred_units(teacher.tolist())
    total = 0.0
    for b in range(len(u)):
        q_s, q_t = assignment(u[b], cs), assignment(w[b], cs)
        total += -sum(q_t[j] * math.log(q_s[j]) for j in range(len(cs)))
    return total / len(u)


def test_equal_one_hot_assignments_give_zero():
    one_hot = torch.eye(4)[[0, 2, 3, 3, 1]]
    assert soft_cluster_cross_entropy(one_hot, one_hot.log()).item() == 0.0
    # A one-hot target against a student that puts mass elsewhere costs -log q.
    student = torch.tensor([[0.5, 0.5, 0.0, 0.0]]).log()
    target = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    assert soft_cluster_cross_entropy(target, student).item() == pytest.approx(math.log(2))


def test_cross_entropy_matches_loop_and_is_entropy_on_the_diagonal():
    gen = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(6, 5, generator=gen, dtype=torch.float64), dim=1)
    log_q = torch.log_softmax(torch.randn(6, 5, generator=gen, dtype=torch.float64), dim=1)
    naive = -sum(p[b, j].item() * log_q[b, j].item() for b in range(6) for j in range(5)) / 6
    assert soft_cluster_cross_entropy(p, log_q).item() == pytest.approx(naive, rel=1e-13)
    # Equal soft distributions: the cross-entropy is their entropy, above 0.
    entropy = -(p * p.log()).sum(dim=1).mean().item()
    assert soft_cluster_cross_entropy(p, p.log()).item() == pytest.approx(entropy, rel=1e-13)
    assert entropy > 0.1
    with pytest.raises(ValueError, match=r"\(6, 5\) and \(6, 4\)"):
        soft_cluster_cross_entropy(p, log_q[:, :4])


@pytest.mark.parametrize("n_clusters, dim, temperature", [(3, 4, 0.1), (7, 5, 1.0), (1, 2, 0.5)])
def test_loss_matches_naive_loop(n_clusters, dim, temperature):
    torch.manual_seed(n_clusters)
    loss = SoftClusterLoss(n_clusters, dim, temperature).double()
    student = torch.randn(6, dim, dtype=torch.float64)
    teacher = torch.randn(6, dim, dtype=torch.float64)
    expected = naive_cluster_loss(student, teacher, loss.centroids.detach(), temperature)
    assert loss(student, teacher).item() == pytest.approx(expected, rel=1e-12)


def test_gradients_reach_student_and_centroids_not_teacher():
    torch.manual_seed(1)
    loss = SoftClusterLoss(5, 8, temperature=0.2)
    student = torch.randn(10, 8, requires_grad=True)
    teacher = torch.randn(10, 8, requires_grad=True)
    loss(student, teacher).backward()
    assert teacher.grad is None
    assert student.grad.abs().sum() > 0
    assert loss.centroids.grad.abs().sum() > 0


def test_invariances():
    """Centring and normalisation: a shift of the whole batch, a positive scale, and a
    permutation of the images applied to both networks leave the loss unchanged."""
    torch.manual_seed(2)
    loss = SoftClusterLoss(4, 6, temperature=0.3).double()
    student = torch.randn(9, 6, dtype=torch.float64)
    teacher = torch.randn(9, 6, dtype=torch.float64)
    reference = loss(student, teacher).item()
    shift = torch.randn(6, dtype=torch.float64)
    shifted = loss(student + shift, 3.0 * teacher - shift).item()
    assert shifted == pytest.approx(reference, rel=1e-12)
    perm = torch.randperm(9)
    assert loss(student[perm], teacher[perm]).item() == pytest.approx(reference, rel=1e-12)
    # Pairing each student image with another image's teacher changes it.
    assert loss(student, teacher[perm]).item() != pytest.approx(reference, rel=1e-6)


def test_agreement_at_sharp_centroids_approaches_zero():
    """Student = teacher, each centred embedding on its own centroid, tau -> 0: one-hot
    assignments that agree, so the loss goes to 0."""
    directions = torch.eye(4, dtype=torch.float64)[[0, 1, 2, 3, 0, 1, 2, 3]]
    embeddings = directions - directions.mean(dim=0)  # centred: the loss's centring keeps them
    loss = SoftClusterLoss(4, 4, temperature=0.01).double()
    with torch.no_grad():
        loss.centroids.copy_(embeddings[:4])
    assert loss(embeddings, embeddings).item() < 1e-6
    assert loss.assign(embeddings).argmax(dim=1).tolist() == [0, 1, 2, 3, 0, 1, 2, 3]


def test_errors_and_repr():
    loss = SoftClusterLoss(3, 4)
    with pytest.raises(ValueError, match=r"student \(5, 4\) and teacher \(6, 4\)"):
        loss(torch.zeros(5, 4), torch.zeros(6, 4))
    with pytest.raises(ValueError, match=r"\(B, 4\) with B >= 2, got \(1, 4\)"):
        loss(torch.zeros(1, 4), torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"got \(5, 3\)"):
        loss(torch.zeros(5, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="temperature"):
        SoftClusterLoss(3, 4, temperature=0.0)
    assert "n_clusters=3, dim=4, temperature=0.1" in repr(loss)
