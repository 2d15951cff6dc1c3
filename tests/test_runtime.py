"""Tests of lib.runtime: the device policy, seeds and the determinism settings a run records."""

import json
import random

import numpy as np
import pytest
import torch

from lib.runtime import PORTABLE_X86_KERNELS, determinism_flags, portable_cpu_kernels, runtime, seed_everything


@pytest.fixture(autouse=True)
def restore_determinism():
    """seed_everything switches on deterministic algorithms process-wide; put the flag back."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def test_cpu_runtime_has_no_autocast_and_is_channels_last():
    rt = runtime("cpu")
    assert rt.device == torch.device("cpu")
    assert rt.autocast_dtype is None and rt.channels_last
    a = torch.randn(4, 4)
    with rt.autocast():
        assert (a @ a).dtype == torch.float32
    x = rt.batch(torch.randn(2, 3, 5, 5))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert rt.batch(torch.randn(2, 3)).is_contiguous()  # only images change layout
    conv = rt.prepare(torch.nn.Conv2d(3, 4, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_cuda_runtime_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        runtime("cuda")


def test_seed_everything_makes_draws_repeatable():
    def draws(seed):
        generator = seed_everything(seed)
        return torch.randn(5), torch.rand(3, generator=generator), np.random.rand(2), random.random()

    first, again, other = draws(7), draws(7), draws(8)
    for a, b in zip(first, again):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not torch.equal(first[0], other[0])
    assert torch.are_deterministic_algorithms_enabled()


def test_seed_everything_records_what_it_set_for_the_stage_runner(tmp_path, monkeypatch):
    state = tmp_path / "run_state.jsonl"
    monkeypatch.setenv("LIB_RUN_STATE", str(state))
    seed_everything(3)
    seed_everything(4, deterministic=False)
    calls = [json.loads(line) for line in state.read_text().splitlines()]
    assert [c["seed"] for c in calls] == [3, 4]
    assert calls[0]["flags"]["deterministic_algorithms"] is True
    assert calls[1]["flags"] == determinism_flags()  # what torch reports, not what was asked for
    monkeypatch.delenv("LIB_RUN_STATE")
    seed_everything(5)
    assert len(state.read_text().splitlines()) == 2  # nothing recorded outside a stage run


def test_cpu_kernels_are_pinned_to_avx2_only_where_avx2_exists(monkeypatch):
    for key in PORTABLE_X86_KERNELS:
        monkeypatch.delenv(key, raising=False)
    avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    assert portable_cpu_kernels(avx2, "x86_64") == PORTABLE_X86_KERNELS
    assert portable_cpu_kernels("flags\t: fpu sse2 avx\n", "x86_64") == {}  # an older x86 CPU: nothing to pin
    assert portable_cpu_kernels(avx2, "aarch64") == {}
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")  # a user's own choice wins
    assert portable_cpu_kernels(avx2, "x86_64")["ATEN_CPU_CAPABILITY"] == "default"
