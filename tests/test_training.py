"""Tests of lib.training.fit: model selection, resuming, step caps."""

import pytest
import torch
from torch import nn

from lib.runtime import runtime, seed_everything
from lib.training import fit

CPU = runtime("cpu")


@pytest.fixture(autouse=True)
def restore_determinism():
    """seed_everything switches on deterministic algorithms process-wide; put the flag back."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def regression_data(n: int = 64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=generator)
    y = x @ torch.arange(1.0, 6.0)[:, None] + 0.1 * torch.randn(n, 1, generator=generator)
    return x, y


def shuffled_batches(x, y, batch_size: int = 8):
    """batches(epoch): a fresh order per epoch from torch's global RNG (which a checkpoint must restore)."""
    calls = []

    def batches(epoch):
        calls.append(epoch)
        order = torch.randperm(len(x))
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            yield x[idx], y[idx]

    return batches, calls


def run(epochs: int, checkpoint=None, seed: int = 0):
    """Seed, build a linear model and an Adam optimizer, fit; return (model, result, epochs run)."""
    seed_everything(seed)
    model = nn.Linear(5, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y = regression_data()
    batches, calls = shuffled_batches(x, y)
    val_x, val_y = regression_data(seed=1)

    def validate(m):
        with torch.no_grad():
            return -nn.functional.mse_loss(m(val_x), val_y).item()

    result = fit(
        model, nn.functional.mse_loss, batches, optimizer,
        epochs=epochs, runtime=CPU, validate=validate, checkpoint=checkpoint, progress=False,
    )
    return model, result, calls


def test_fit_keeps_the_weights_of_the_best_validation_epoch():
    seed_everything(0)
    model = nn.Linear(5, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = regression_data()
    batches, _ = shuffled_batches(x, y)
    scores = [0.1, 0.5, 0.9, 0.3, 0.2]  # peaks at epoch 2
    snapshots = []

    def validate(m):
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return scores[len(snapshots) - 1]

    result = fit(model, nn.functional.mse_loss, batches, optimizer,
                 epochs=5, runtime=CPU, validate=validate, progress=False)

    assert result.best_epoch == 2 and result.best_score == 0.9
    assert result.best_state.keys() == snapshots[2].keys()
    for key, value in result.best_state.items():
        assert torch.equal(value, snapshots[2][key])
    final = model.state_dict()
    assert not all(torch.equal(result.best_state[k], final[k]) for k in final)
    assert [r["val_score"] for r in result.history] == scores
    assert [r["epoch"] for r in result.history] == [0, 1, 2, 3, 4]
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < losses[0]  # it did learn


def test_fit_without_validation_keeps_the_last_epoch():
    seed_everything(0)
    model = nn.Linear(5, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    batches, _ = shuffled_batches(*regression_data())
    result = fit(model, nn.functional.mse_loss, batches, optimizer, epochs=3, runtime=CPU, progress=False)
    assert result.best_epoch == 2
    for key, value in model.state_dict().items():
        assert torch.equal(result.best_state[key], value)


def test_best_state_is_a_copy_not_a_view():
    model, result, _ = run(epochs=2)
    with torch.no_grad():
        model.weight.add_(100.0)
    assert result.best_state["weight"].abs().max() < 100


def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    checkpoint = tmp_path / "run.ckpt"
    _, first, first_calls = run(epochs=2, checkpoint=checkpoint)
    assert checkpoint.exists() and first_calls == [0, 1]

    # A fresh process: other seed, other initial weights; the checkpoint must restore all of it.
    resumed_model, resumed, resumed_calls = run(epochs=4, checkpoint=checkpoint, seed=123)
    assert resumed_calls == [2, 3]  # only the missing epochs ran

    straight_model, straight, straight_calls = run(epochs=4)
    assert straight_calls == [0, 1, 2, 3]
    for key, value in straight_model.state_dict().items():
        assert torch.allclose(resumed_model.state_dict()[key], value, rtol=0, atol=1e-6), key
    for key, value in straight.best_state.items():
        assert torch.allclose(resumed.best_state[key], value, rtol=0, atol=1e-6), key
    assert resumed.best_epoch == straight.best_epoch
    assert [r["epoch"] for r in resumed.history] == [0, 1, 2, 3]
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in straight.history], abs=1e-6)


def test_a_damaged_checkpoint_names_the_file(tmp_path):
    checkpoint = tmp_path / "damaged.ckpt"
    checkpoint.write_bytes(b"not a checkpoint at all")
    with pytest.raises(RuntimeError, match=r"cannot resume from checkpoint .*damaged\.ckpt"):
        run(epochs=2, checkpoint=checkpoint)


def test_a_checkpoint_of_another_model_names_the_file(tmp_path):
    checkpoint = tmp_path / "other.ckpt"
    run(epochs=1, checkpoint=checkpoint)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.Adam(model.parameters())
    with pytest.raises(RuntimeError, match="other.ckpt"):
        fit(model, nn.functional.mse_loss, lambda e: [], optimizer,
            epochs=2, runtime=CPU, checkpoint=checkpoint, progress=False)


def test_max_steps_per_epoch_caps_the_steps():
    model = nn.Linear(5, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    batches, _ = shuffled_batches(*regression_data(n=80), batch_size=8)  # 10 batches per epoch
    steps = []

    def loss_fn(out, y):
        steps.append(len(y))
        return nn.functional.mse_loss(out, y)

    fit(model, loss_fn, batches, optimizer, epochs=2, runtime=CPU, max_steps_per_epoch=3, progress=False)
    assert len(steps) == 6
    steps.clear()
    fit(model, loss_fn, batches, optimizer, epochs=1, runtime=CPU, progress=False)
    assert len(steps) == 10
