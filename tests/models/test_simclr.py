"""The shared SimCLR trainer: one step is the paper's recipe written out by hand; resume; the model's layout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lib.models.simclr import SimCLR, fit_simclr, two_views
from lib.runtime import runtime
from lib.training import checkpoint_path


def tiny_simclr(seed: int) -> SimCLR:
    torch.manual_seed(seed)
    # batch normalisation couples the views of a batch: one forward pass over both is observable
    return SimCLR(nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.BatchNorm1d(6)), encoder_dim=6,
                  projection_dim=3).double()


def images(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return x, torch.arange(n)


def noisy_view(x: torch.Tensor) -> torch.Tensor:
    """A random "augmentation" from torch's global generator (as cocoa's digit views draw theirs)."""
    return x + 0.1 * torch.randn_like(x)


def batches(epoch: int):
    x, y = images()
    return [(x[:4], y[:4]), (x[4:], y[4:])]


def naive_nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR Algorithm 1 over the 2N stacked views, one anchor at a time."""
    n2 = len(z)
    cos = lambda a, b: a @ b / (a.norm() * b.norm())  # noqa: E731
    total = 0.0
    for i in range(n2):
        j = (i + n2 // 2) % n2
        denominator = sum(torch.exp(cos(z[i], z[k]) / temperature) for k in range(n2) if k != i)
        total = total - torch.log(torch.exp(cos(z[i], z[j]) / temperature) / denominator)
    return total / n2


def test_fit_simclr_is_the_papers_recipe_step_by_step():
    """Each step: two views (first draw first) through g(h(.)) in one batch, NT-Xent, AdamW; labels unused."""
    model = tiny_simclr(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    torch.manual_seed(1)
    result = fit_simclr(model, batches, optimizer, view=noisy_view, temperature=0.5, epochs=2,
                        runtime=runtime("cpu"), progress=False)

    by_hand = tiny_simclr(0)
    optimizer = torch.optim.AdamW(by_hand.parameters(), lr=0.05)
    torch.manual_seed(1)
    losses = []
    for epoch in range(2):
        for x, _ in batches(epoch):
            views = torch.cat([noisy_view(x), noisy_view(x)])
            loss = naive_nt_xent(by_hand(views), 0.5)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())

    # The trainer scores NT-Xent in float32 (as under autocast): agreement to float32's precision; a step of
    # another recipe (views swapped or drawn apart, labels used) moves the weights by about the learning rate.
    for name, value in by_hand.state_dict().items():
        torch.testing.assert_close(result.best_state[name], value, rtol=1e-4, atol=1e-5)
    assert [r["loss"] for r in result.history] == pytest.approx([sum(losses[:2]) / 2, sum(losses[2:]) / 2], rel=1e-5)
    assert result.best_epoch == 1  # without validation the last epoch is kept


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = checkpoint_path("simclr_test", 0)

    def run(epochs: int, checkpoint=None, fingerprint=None):
        model = tiny_simclr(0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
        torch.manual_seed(1)
        return fit_simclr(model, batches, optimizer, view=noisy_view, temperature=0.5, epochs=epochs,
                          runtime=runtime("cpu"), progress=False, checkpoint=checkpoint, fingerprint=fingerprint)

    uninterrupted = run(3)
    run(1, path, "run a")  # interrupted after its first epoch
    torch.manual_seed(123)  # whatever happened in between: the checkpoint restores the generators
    resumed = run(3, path, "run a")
    assert all(torch.equal(resumed.best_state[k], v) for k, v in uninterrupted.best_state.items())
    assert [r["epoch"] for r in resumed.history] == [0, 1, 2]
    with pytest.warns(RuntimeWarning, match="fingerprint differs"):
        other = run(1, path, "run b")  # another run's checkpoint is not resumed
    assert [r["epoch"] for r in other.history] == [0]


def test_two_views_and_the_models_parts():
    x = torch.arange(6.0).reshape(3, 2)
    calls = iter([10.0, 20.0])
    stacked = two_views(x, lambda batch: batch + next(calls))
    torch.testing.assert_close(stacked, torch.cat([x + 10, x + 20]))
    model = tiny_simclr(0)
    assert model(images()[0]).shape == (8, 3)
    assert {k.split(".")[0] for k in model.state_dict()} == {"encoder", "head"}  # the saved files' keys
    with pytest.raises(ValueError, match="temperature"):
        fit_simclr(model, batches, torch.optim.SGD(model.parameters(), lr=0.1), view=noisy_view, temperature=0.0,
                   epochs=1, runtime=runtime("cpu"))
