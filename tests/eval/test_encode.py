"""Encoding a dataset in chunks: the same numbers as one pass, on the runtime's terms."""

import numpy as np
import pytest
import torch
from torch import nn

from lib.eval.encode import encode, encode_numpy
from lib.runtime import runtime


def test_chunks_give_the_same_result_as_one_pass():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    x = torch.randn(10, 1, 8, 8)
    with torch.no_grad():
        whole = model(x)
    for batch_size in (1, 3, 10, 64):
        torch.testing.assert_close(encode(model, x, batch_size), whole)
    out = encode(model, x, 4, runtime("cpu"))
    assert out.dtype == torch.float32 and out.device.type == "cpu" and not out.requires_grad
    torch.testing.assert_close(out, whole)


def test_no_gradients_are_kept_and_a_bad_batch_size_is_named():
    layer = nn.Linear(3, 2)
    assert not encode(layer, torch.randn(5, 3), 2).requires_grad
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        encode(layer, torch.randn(5, 3), 0)


def test_encode_numpy_puts_the_module_in_eval_mode_and_returns_float64():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.5)).train()
    x = torch.randn(10, 4)
    out = encode_numpy(module, x, batch_size=3, runtime=runtime("cpu"))
    assert not module.training and out.dtype == np.float64 and out.shape == (10, 3)
    with torch.no_grad():
        np.testing.assert_allclose(out, module(x).numpy(), rtol=1e-6)
