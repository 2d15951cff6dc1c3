"""Encoding a dataset in chunks: the same numbers as one pass, on the runtime's terms."""

import pytest
import torch
from torch import nn

from lib.eval.encode import encode
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
