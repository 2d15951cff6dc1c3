"""Tests of lib.training: model selection, schedules, clipping, callbacks, early stopping, resuming, step caps."""

import math
import os
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lib.runtime import runtime, seed_everything
from lib.training import (
    Callback,
    checkpoint_path,
    clear_checkpoints,
    cosine_value,
    fit,
    param_groups,
    run_fingerprint,
    to_device,
    warmup_cosine,
)

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


def validation(seed: int = 1):
    val_x, val_y = regression_data(seed=seed)

    def validate(m):
        with torch.no_grad():
            return -nn.functional.mse_loss(m(val_x), val_y).item()

    return validate


def run(epochs: int, checkpoint=None, seed: int = 0, **options):
    """Seed, build a linear model and an Adam optimizer, fit; return (model, result, epochs run)."""
    seed_everything(seed)
    model = nn.Linear(5, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    batches, calls = shuffled_batches(*regression_data())
    result = fit(
        model, nn.functional.mse_loss, batches, optimizer,
        epochs=epochs, runtime=CPU, validate=validation(), checkpoint=checkpoint, progress=False, **options,
    )
    return model, result, calls


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ------------------------------------------------------------------ model selection
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
    assert_same_state(result.best_state, snapshots[2])
    final = model.state_dict()
    assert not all(torch.equal(result.best_state[k], final[k]) for k in final)
    assert [r["val_score"] for r in result.history] == scores
    assert [r["epoch"] for r in result.history] == [0, 1, 2, 3, 4]
    assert all(r.keys() == {"epoch", "loss", "val_score"} for r in result.history)  # no option, no new key
    assert result.last_epoch == 4 and not result.stopped_at_plateau
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < losses[0]  # it did learn


def test_fit_without_validation_keeps_the_last_epoch():
    seed_everything(0)
    model = nn.Linear(5, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    batches, _ = shuffled_batches(*regression_data())
    result = fit(model, nn.functional.mse_loss, batches, optimizer, epochs=3, runtime=CPU, progress=False)
    assert result.best_epoch == 2
    assert_same_state(result.best_state, model.state_dict())


def test_best_state_is_a_copy_not_a_view():
    model, result, _ = run(epochs=2)
    with torch.no_grad():
        model.weight.add_(100.0)
    assert result.best_state["weight"].abs().max() < 100


def test_the_loop_is_the_plain_pytorch_loop_it_replaces():
    """With every option at its default, fit's weights are those of the textbook loop, bit for bit."""
    x, y = regression_data()
    seed_everything(0)
    model = nn.Linear(5, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
    batches, _ = shuffled_batches(x, y)
    fit(model, nn.functional.mse_loss, batches, optimizer, epochs=3, runtime=CPU, progress=False)

    seed_everything(0)
    reference = nn.Linear(5, 1)
    reference_optimizer = torch.optim.AdamW(reference.parameters(), lr=0.05, weight_decay=0.01)
    reference_batches, _ = shuffled_batches(x, y)
    for epoch in range(3):
        for xb, yb in reference_batches(epoch):
            loss = nn.functional.mse_loss(reference(xb), yb)
            reference_optimizer.zero_grad()
            loss.backward()
            reference_optimizer.step()
    assert_same_state(model.state_dict(), reference.state_dict())


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


# ------------------------------------------------------------------ schedules, groups, clipping
def test_warmup_cosine_equals_torch_s_linear_then_cosine_annealing_schedulers():
    """Oracle: torch.optim.lr_scheduler's LinearLR (warm-up from 1/W) then CosineAnnealingLR (to final * lr)."""
    warmup, total, final, base = 4, 20, 0.1, 0.5
    parameter = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=base)
    scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [
        torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1),
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=final * base),
    ], milestones=[warmup])
    expected = []
    for _ in range(total):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    schedule = warmup_cosine(warmup, final)
    assert [base * schedule(s, total) for s in range(total)] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert schedule(0, total) == 1 / warmup and schedule(warmup - 1, total) == 1.0
    with pytest.raises(ValueError, match="steps_per_epoch"):
        schedule(0, None)


def test_cosine_value_runs_from_start_to_end_and_holds():
    assert cosine_value(0.996, 1.0, 0, 10) == 0.996
    assert cosine_value(0.996, 1.0, 10, 10) == 1.0 == cosine_value(0.996, 1.0, 15, 10)
    assert cosine_value(0.0, 2.0, 5, 10) == pytest.approx(1.0)
    naive = [2 - 2 * (1 + math.cos(math.pi * t / 7)) / 2 for t in range(8)]  # the formula written out
    assert [cosine_value(0.0, 2.0, t, 7) for t in range(8)] == pytest.approx(naive)
    with pytest.raises(ValueError, match="total > 0"):
        cosine_value(0.0, 1.0, 0, 0)


def test_fit_applies_the_schedules_at_every_step_to_every_group():
    seed_everything(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.LayerNorm(4), nn.Linear(4, 1))
    groups = param_groups(model, weight_decay=0.1)
    groups[1]["lr"] = 0.02  # a group with its own base learning rate
    optimizer = torch.optim.AdamW(groups, lr=0.01)
    batches, _ = shuffled_batches(*regression_data())  # 8 batches, no len(): steps_per_epoch says it
    seen = []

    class Record(Callback):
        def on_step(self, state):
            seen.append((state.global_step, state.total_steps, [(g["lr"], g["weight_decay"]) for g in optimizer.param_groups]))

    lr, wd = warmup_cosine(3), lambda step, total: cosine_value(1.0, 4.0, step, total)
    result = fit(model, nn.functional.mse_loss, batches, optimizer, epochs=2, runtime=CPU, progress=False,
                 steps_per_epoch=8, max_steps_per_epoch=5, lr_schedule=lr, wd_schedule=wd, callbacks=[Record()])
    assert [s[0] for s in seen] == list(range(10)) and {s[1] for s in seen} == {10}
    for step, _, values in seen:
        assert values == [(0.01 * lr(step, 10), 0.1 * wd(step, 10)), (0.02 * lr(step, 10), 0.0)]
    assert [r["lr"] for r in result.history] == [0.01 * lr(4, 10), 0.01 * lr(9, 10)]
    assert [r["weight_decay"] for r in result.history] == [0.1 * wd(4, 10), 0.1 * wd(9, 10)]


def test_the_schedules_ask_for_the_steps_per_epoch_when_batches_have_no_length():
    model = nn.Linear(5, 1)
    batches, _ = shuffled_batches(*regression_data())
    with pytest.raises(ValueError, match="pass steps_per_epoch"):
        fit(model, nn.functional.mse_loss, batches, torch.optim.SGD(model.parameters(), lr=0.1),
            epochs=1, runtime=CPU, progress=False, lr_schedule=warmup_cosine(2))
    x, y = regression_data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)  # 4 batches
    totals = []

    class Total(Callback):
        def on_step(self, state):
            totals.append(state.total_steps)

    fit(model, nn.functional.mse_loss, lambda epoch: loader, torch.optim.SGD(model.parameters(), lr=0.1),
        epochs=3, runtime=CPU, progress=False, lr_schedule=warmup_cosine(2), callbacks=[Total()], max_steps_per_epoch=3)
    assert totals == [9] * 9  # min(len, max_steps_per_epoch) per epoch


def test_param_groups_decay_weights_of_layers_but_not_biases_and_norms():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2), nn.LayerNorm(2))
    model[0].bias.requires_grad_(False)  # frozen: in no group
    groups = param_groups(model, weight_decay=0.05)
    decayed, plain = ({id(p) for p in g["params"]} for g in groups)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    # Independently, by module type: the kernels of convolutions and linear layers decay, nothing else.
    assert decayed == {id(model[0].weight), id(model[3].weight)}
    assert plain == {id(model[1].weight), id(model[1].bias), id(model[3].bias), id(model[4].weight), id(model[4].bias)}
    # Named parameters of several parts, a shared parameter once; an empty group is dropped.
    shared = nn.Linear(3, 3, bias=False)
    groups = param_groups([*shared.named_parameters(), *shared.named_parameters(prefix="again")], 0.1)
    assert len(groups) == 1 and groups[0]["params"] == [shared.weight]


def test_gradient_clipping_bounds_the_step_of_plain_sgd():
    """SGD with lr 1 moves the weights by minus the gradient: the move's norm is the clipped norm."""
    seed_everything(0)
    model = nn.Linear(5, 1)
    before = torch.cat([p.detach().clone().flatten() for p in model.parameters()])
    x, y = regression_data()
    fit(model, nn.functional.mse_loss, lambda epoch: [(x, 100 * y)], torch.optim.SGD(model.parameters(), lr=1.0),
        epochs=1, runtime=CPU, progress=False, clip_grad_norm=0.25)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm().item() == pytest.approx(0.25, rel=1e-5)


def test_a_non_finite_loss_names_its_epoch_and_step_before_any_update():
    seed_everything(0)
    model = nn.Linear(5, 1)
    x, y = regression_data()
    states = []

    def batches(epoch):
        for step in range(4):
            bad = epoch == 1 and step == 2
            yield x[:8], torch.full_like(y[:8], math.nan) if bad else y[:8]

    class Snapshot(Callback):
        def on_step(self, state):
            states.append({k: v.clone() for k, v in state.model.state_dict().items()})

    with pytest.raises(FloatingPointError, match=r"nan at epoch 1, step 2 \(global step 6\)"):
        fit(model, nn.functional.mse_loss, batches, torch.optim.SGD(model.parameters(), lr=0.01),
            epochs=3, runtime=CPU, progress=False, callbacks=[Snapshot()])
    assert len(states) == 6
    assert_same_state(model.state_dict(), states[-1])  # the bad batch changed nothing


# ------------------------------------------------------------------ callbacks, forward, early stopping
def test_callbacks_run_in_order_and_may_add_to_the_record():
    events = []

    class Trace(Callback):
        def on_after_backward(self, state):
            assert all(p.grad is not None for p in state.model.parameters())
            events.append(("backward", state.epoch, state.step, state.global_step))

        def on_step(self, state):
            events.append(("step", state.epoch, state.step, state.global_step))

        def on_epoch(self, state, record):
            events.append(("epoch", state.epoch, state.step, state.global_step))
            assert state.loss == record["loss"] and "val_score" in record
            record["teacher_score"] = 2 * record["val_score"]

    x, y = regression_data(n=16)
    model = nn.Linear(5, 1)
    result = fit(model, nn.functional.mse_loss, lambda epoch: [(x[:8], y[:8]), (x[8:], y[8:])],
                 torch.optim.SGD(model.parameters(), lr=0.01), epochs=2, runtime=CPU, progress=False,
                 validate=validation(), callbacks=[Trace()])
    assert events == [
        ("backward", 0, 0, 0), ("step", 0, 0, 0), ("backward", 0, 1, 1), ("step", 0, 1, 1), ("epoch", 0, 2, 2),
        ("backward", 1, 0, 2), ("step", 1, 0, 2), ("backward", 1, 1, 3), ("step", 1, 1, 3), ("epoch", 1, 2, 4),
    ]
    assert all(r["teacher_score"] == 2 * r["val_score"] for r in result.history)


class StudentTeacher(nn.Module):
    """Two parts, one learning, one following it by a moving average (a DINO-like pair, in miniature)."""

    def __init__(self):
        super().__init__()
        self.student, self.teacher = nn.Linear(5, 1), nn.Linear(5, 1)
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)


def student_teacher_forward(model, batch):
    x, target = batch["x"], batch["y"]
    fit_term = nn.functional.mse_loss(model.student(x), target)
    agreement = nn.functional.mse_loss(model.student(x), model.teacher(x))
    return fit_term + 0.1 * agreement, {"fit": fit_term, "agreement": agreement.item()}


class TeacherAverage(Callback):
    def __init__(self, momentum: float):
        self.momentum = momentum

    def on_step(self, state):
        with torch.no_grad():
            for t, s in zip(state.model.teacher.parameters(), state.model.student.parameters()):
                t.mul_(self.momentum).add_((1 - self.momentum) * s)


def test_forward_trains_a_model_of_several_parts_and_logs_its_terms():
    seed_everything(0)
    model = StudentTeacher()
    x, y = regression_data(n=32)
    optimizer = torch.optim.SGD(model.student.parameters(), lr=0.05)
    steps = []

    class Terms(Callback):
        def on_step(self, state):
            steps.append(state.logs)

    teacher_before = model.teacher.weight.detach().clone()
    result = fit(model, None, lambda epoch: [{"x": x[i : i + 8], "y": y[i : i + 8]} for i in range(0, 32, 8)],
                 optimizer, epochs=2, runtime=CPU, progress=False, forward=student_teacher_forward,
                 callbacks=[TeacherAverage(0.9), Terms()])
    assert list(result.history[0]) == ["epoch", "loss", "fit", "agreement"]
    for epoch, record in enumerate(result.history):
        terms = steps[4 * epoch : 4 * epoch + 4]
        assert record["fit"] == sum(t["fit"] for t in terms) / 4
        assert record["agreement"] == sum(t["agreement"] for t in terms) / 4
    assert not torch.equal(model.teacher.weight, teacher_before)  # the callback moved the teacher


def test_forward_rejects_augment_and_reserved_log_names():
    model = nn.Linear(5, 1)
    x, y = regression_data(n=8)
    with pytest.raises(ValueError, match="augment inside forward"):
        fit(model, None, lambda e: [(x, y)], torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, runtime=CPU,
            forward=lambda m, b: m(b[0]).sum(), augment=lambda v: v)
    with pytest.raises(ValueError, match=r"\['lr'\]"):
        fit(model, None, lambda e: [(x, y)], torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, runtime=CPU,
            progress=False, forward=lambda m, b: (m(b[0]).sum(), {"lr": 1.0}))


def plateau_oracle(scores, patience, min_delta):
    """The epoch at which training stops: the first after `patience` epochs without beating the best by > min_delta."""
    best, stale = -math.inf, 0
    for epoch, score in enumerate(scores):
        if score > best + min_delta:
            best, stale = score, 0
        else:
            stale += 1
        if stale >= patience:
            return epoch
    return None


@pytest.mark.parametrize(("scores", "patience", "min_delta"), [
    ([0.1, 0.5, 0.5, 0.4, 0.9, 1.0], 2, 0.0),
    ([0.1, 0.2, 0.25, 0.26, 0.5, 0.6], 2, 0.1),
    ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 1, 0.0),
    ([0.3, 0.2, 0.3, 0.4, 0.5, 0.6], 1, 0.0),
])
def test_early_stopping_at_a_validation_plateau(scores, patience, min_delta):
    model = nn.Linear(5, 1)
    batches, calls = shuffled_batches(*regression_data())
    result = fit(model, nn.functional.mse_loss, batches, torch.optim.SGD(model.parameters(), lr=0.01),
                 epochs=len(scores), runtime=CPU, progress=False, validate=lambda m: scores[len(calls) - 1],
                 patience=patience, min_delta=min_delta)
    stop = plateau_oracle(scores, patience, min_delta)
    last = len(scores) - 1 if stop is None else stop
    assert result.stopped_at_plateau == (stop is not None) and result.last_epoch == last
    assert calls == list(range(last + 1)) and len(result.history) == last + 1
    assert result.best_epoch == int(np.argmax(scores[: last + 1]))


def test_early_stopping_needs_a_validation_score():
    model = nn.Linear(5, 1)
    with pytest.raises(ValueError, match="early stopping needs validate"):
        fit(model, nn.functional.mse_loss, lambda e: [], torch.optim.SGD(model.parameters(), lr=0.1),
            epochs=2, runtime=CPU, patience=2)


def test_to_device_moves_nested_batches_and_formats_image_batches():
    Pair = namedtuple("Pair", "images labels")
    batch = {"views": [torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)], "pair": Pair(torch.randn(2, 1, 5, 5),
             torch.tensor([1, 2])), "masks": torch.zeros(2, 1, 4, 4, dtype=torch.uint8), "name": "tile"}
    moved = to_device(batch, CPU)
    assert set(moved) == set(batch) and moved["name"] == "tile" and isinstance(moved["pair"], Pair)
    assert all(v.is_contiguous(memory_format=torch.channels_last) and not v.is_contiguous() for v in moved["views"])
    assert moved["pair"].images.is_contiguous(memory_format=torch.channels_last)
    assert moved["masks"].is_contiguous()  # not an image batch: moved as it is
    for a, b in zip(moved["views"], batch["views"]):
        assert torch.equal(a, b)
    assert torch.equal(moved["pair"].labels, batch["pair"].labels)


# ------------------------------------------------------------------ checkpoints and resuming
class KillAt(Callback):
    """Raise in the given epoch's given step, after the step: a process killed mid-epoch."""

    def __init__(self, epoch: int, step: int = 1):
        self.epoch, self.step = epoch, step

    def on_step(self, state):
        if (state.epoch, state.step) == (self.epoch, self.step):
            raise KeyboardInterrupt("killed")


def all_options_run(epochs, checkpoint, seed=0, kill=None, **extra):
    """Every option that carries state across epochs: schedules, groups, clipping, a callback-driven teacher,
    early stopping, logged terms, a data generator of its own, NumPy and Python random draws."""
    seed_everything(seed)
    model = StudentTeacher()
    optimizer = torch.optim.AdamW(param_groups(model.student, 0.05), lr=0.03)
    x, y = regression_data()
    generator = torch.Generator().manual_seed(seed + 1)

    def batches(epoch):
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), 16):
            idx = order[i : i + 16]
            noise = torch.from_numpy(np.random.normal(size=(len(idx), 1))).float() * 0.01 * torch.rand(1).item()
            yield {"x": x[idx], "y": y[idx] + noise}

    scores, current = [0.1, 0.3, 0.2, 0.25, 0.2, 0.1, 0.0, 0.0], {}

    class Epoch(Callback):  # validate sees only the model: tell it the epoch
        def on_step(self, state):
            current["epoch"] = state.epoch

    callbacks = [TeacherAverage(0.8), Epoch()] + ([KillAt(*kill)] if kill else [])
    result = fit(model, None, batches, optimizer, epochs=epochs, runtime=CPU, progress=False, checkpoint=checkpoint,
                 forward=student_teacher_forward, steps_per_epoch=4, lr_schedule=warmup_cosine(3, 0.1),
                 wd_schedule=lambda s, t: cosine_value(1.0, 3.0, s, t), clip_grad_norm=1.0, callbacks=callbacks,
                 validate=lambda m: scores[current["epoch"]], patience=3, generators=[generator], **extra)
    return model, result, optimizer


def assert_same_optimizer_state(a, b):
    a, b = a.state_dict(), b.state_dict()
    assert a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys()
    for key, state in a["state"].items():
        assert state.keys() == b["state"][key].keys()
        for name, value in state.items():
            assert torch.equal(value, b["state"][key][name]), (key, name)


def assert_same_result(a, b):
    assert_same_state(a.best_state, b.best_state)
    assert (a.best_epoch, a.best_score, a.last_epoch, a.stopped_at_plateau) == (
        b.best_epoch, b.best_score, b.last_epoch, b.stopped_at_plateau)
    assert a.history == b.history  # floats compared exactly


@pytest.mark.parametrize("killed_in", [1, 3])
def test_a_killed_and_resumed_run_equals_an_uninterrupted_one_bit_for_bit(tmp_path, killed_in):
    straight_model, straight, straight_optimizer = all_options_run(8, None)
    assert straight.stopped_at_plateau and straight.last_epoch == 4  # 0.3 at epoch 1, then 3 epochs without

    checkpoint = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        all_options_run(8, checkpoint, kill=(killed_in, 1))
    assert torch.load(checkpoint, weights_only=True)["next_epoch"] == killed_in
    # A fresh process: other seed, other weights and generators; the checkpoint must restore all of it.
    model, resumed, optimizer = all_options_run(8, checkpoint, seed=123)
    assert_same_result(resumed, straight)
    assert_same_state(model.state_dict(), straight_model.state_dict())
    assert_same_optimizer_state(optimizer, straight_optimizer)
    after_resumed = np.random.random()  # the global generators end where the uninterrupted run's end
    all_options_run(8, None)
    assert np.random.random() == after_resumed


class ScaledMSE(nn.Module):
    """A loss with a learned parameter (as DIML's margin loss learns its beta), kept by the checkpoint."""

    def __init__(self):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(()))

    def forward(self, out, y):
        return torch.exp(self.log_scale) * nn.functional.mse_loss(out, y) - 0.1 * self.log_scale


def test_a_resumed_run_restores_the_loss_s_own_parameters(tmp_path):
    def loss_run(checkpoint, seed=0, kill=None):
        seed_everything(seed)
        model, loss_fn = nn.Linear(5, 1), ScaledMSE()
        optimizer = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=0.05)
        batches, _ = shuffled_batches(*regression_data())
        fit(model, loss_fn, batches, optimizer, epochs=3, runtime=CPU, progress=False, checkpoint=checkpoint,
            callbacks=[KillAt(*kill)] if kill else ())
        return model, loss_fn

    straight_model, straight_loss = loss_run(None)
    with pytest.raises(KeyboardInterrupt):
        loss_run(tmp_path / "run.pt", kill=(2, 0))
    model, loss_fn = loss_run(tmp_path / "run.pt", seed=3)
    assert straight_loss.log_scale.item() != 0
    assert torch.equal(loss_fn.log_scale, straight_loss.log_scale)
    assert_same_state(model.state_dict(), straight_model.state_dict())


def test_a_finished_run_returns_its_result_without_training(tmp_path):
    checkpoint = tmp_path / "run.pt"
    _, first, first_calls = run(epochs=3, checkpoint=checkpoint)
    after_first = torch.rand(3)
    model, again, calls = run(epochs=3, checkpoint=checkpoint, seed=5)
    assert calls == [] and first_calls == [0, 1, 2]
    assert_same_result(again, first)
    assert torch.equal(torch.rand(3), after_first)  # the random state is the one the run ended with

    stopped = tmp_path / "stopped.pt"
    _, plateau, _ = all_options_run(8, stopped)
    _, again, _ = all_options_run(8, stopped, seed=9, kill=(0, 0))  # any training step would raise
    assert_same_result(again, plateau)


def test_a_longer_rerun_continues_a_finished_run(tmp_path):
    checkpoint = tmp_path / "run.pt"
    run(epochs=2, checkpoint=checkpoint)
    resumed_model, resumed, calls = run(epochs=4, checkpoint=checkpoint, seed=123)
    assert calls == [2, 3]  # only the missing epochs ran
    straight_model, straight, _ = run(epochs=4)
    assert_same_state(resumed_model.state_dict(), straight_model.state_dict())
    assert_same_result(resumed, straight)


def test_a_checkpoint_of_another_fingerprint_is_not_resumed(tmp_path):
    checkpoint = tmp_path / "run.pt"
    run(epochs=2, checkpoint=checkpoint, fingerprint="lr=0.05")
    with pytest.warns(RuntimeWarning, match=r"run\.pt belongs to another run"):
        model, result, calls = run(epochs=2, checkpoint=checkpoint, fingerprint="lr=0.01")
    assert calls == [0, 1]
    assert torch.load(checkpoint, weights_only=True)["fingerprint"] == "lr=0.01"  # overwritten
    _, again, calls = run(epochs=2, checkpoint=checkpoint, fingerprint="lr=0.01")
    assert calls == [] and again.history == result.history


def test_checkpoints_hold_no_pickled_objects(tmp_path):
    checkpoint = tmp_path / "run.pt"
    all_options_run(2, checkpoint)
    state = torch.load(checkpoint, weights_only=True)  # would raise on a NumPy array or any other object
    assert {"fingerprint", "model", "optimizer", "rng", "history", "best_state"} <= set(state)


class RunsCode:
    """A pickle that creates a file when it is loaded."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    checkpoint, marker = tmp_path / "shared.pt", tmp_path / "code_ran"
    torch.save({"model": RunsCode(marker)}, checkpoint)  # pickling only records the call
    with pytest.raises(RuntimeError, match=r"cannot resume from checkpoint .*shared\.pt"):
        run(epochs=1, checkpoint=checkpoint)
    assert not marker.exists()


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


def test_checkpoint_paths_and_clearing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = checkpoint_path("diml/margin_global", 2)
    assert path.as_posix() == "checkpoints/diml/margin_global/seed_2.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    (tmp_path / "checkpoints" / "diml" / "other").mkdir()
    clear_checkpoints("diml/margin_global")
    assert not path.parent.exists() and (tmp_path / "checkpoints" / "diml" / "other").is_dir()
    clear_checkpoints("diml/other")
    assert not (tmp_path / "checkpoints").exists()  # empty parents go too
    clear_checkpoints("diml/never_made")  # nothing to clear is fine
    for bad in ("", "/abs/x", "../outside"):
        with pytest.raises(ValueError, match="relative path"):
            checkpoint_path(bad, 0)


def test_run_fingerprints_tell_config_data_and_code_apart():
    x = torch.arange(6.0)
    base = run_fingerprint({"lr": 0.1, "seed": 0}, data=[x], code=["lib.training"])
    assert base == run_fingerprint({"seed": 0, "lr": 0.1}, data=[x.clone()], code=["lib.training"])
    assert base != run_fingerprint({"lr": 0.1, "seed": 1}, data=[x], code=["lib.training"])
    assert base != run_fingerprint({"lr": 0.1, "seed": 0}, data=[x + 1], code=["lib.training"])
    assert base != run_fingerprint({"lr": 0.1, "seed": 0}, data=[x.int()], code=["lib.training"])
    assert base != run_fingerprint({"lr": 0.1, "seed": 0}, data=[x], code=["lib.io"])


# ------------------------------------------------------------------ several processes
DDP_RUN = """
import sys
import torch
from torch import nn
from lib.runtime import runtime, seed_everything
from lib.training import Callback, distributed, fit, wrap_ddp

checkpoint, kill, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cpu = runtime("cpu")
torch.set_num_threads(1)
with distributed(cpu) as (rank, world):
    seed_everything(rank)  # every process its own random stream, which a checkpoint must keep apart
    model = wrap_ddp(nn.Linear(5, 1), cpu)  # DDP starts every process from rank 0's weights
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    x = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
    y = x.sum(1, keepdim=True)
    scores, current = [0.1, 0.3, 0.2, 0.25, 0.2, 0.1], {}

    def batches(epoch):
        noise = 0.1 * torch.randn(32, 1)  # this process's own draws
        shard = torch.randperm(64, generator=torch.Generator().manual_seed(epoch))[rank::world]
        for i in range(0, 32, 8):
            yield x[shard[i : i + 8]], y[shard[i : i + 8]] + noise[i : i + 8]

    class Control(Callback):
        def on_step(self, state):
            current["epoch"] = state.epoch
            if state.epoch == kill and state.step == 1:
                raise KeyboardInterrupt("killed")

    result = fit(model, nn.functional.mse_loss, batches, optimizer, epochs=6, runtime=cpu, progress=False,
                 validate=lambda m: scores[current["epoch"]], patience=2, callbacks=[Control()],
                 checkpoint=None if checkpoint == "-" else checkpoint)
    if rank == 0:
        torch.save({"model": model.module.state_dict(), "history": result.history, "last": result.last_epoch}, out)
    assert result.stopped_at_plateau and result.last_epoch == 3, result  # every process stops with rank 0
"""


@pytest.mark.slow
def test_a_distributed_run_resumes_every_process_and_stops_together(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_RUN)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}

    def torchrun(checkpoint, kill, out):
        return subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
             str(checkpoint), str(kill), str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    straight = torchrun("-", -1, tmp_path / "straight.pt")
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = torchrun(tmp_path / "run.ckpt", 2, tmp_path / "never.pt")
    assert killed.returncode != 0 and not (tmp_path / "never.pt").exists()
    assert len(torch.load(tmp_path / "run.ckpt", weights_only=True)["rng"]) == 2  # one random state per process
    resumed = torchrun(tmp_path / "run.ckpt", -1, tmp_path / "resumed.pt")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    a, b = torch.load(tmp_path / "straight.pt"), torch.load(tmp_path / "resumed.pt")
    assert a["history"] == b["history"] and a["last"] == b["last"] == 3
    assert_same_state(a["model"], b["model"])
