"""The strided CNN encoder (lib.models.convnet): shapes, widths, resolution halved per block."""

import pytest
import torch
from torch import nn

from lib.models.convnet import conv_encoder


@pytest.mark.parametrize(("n_blocks", "side", "out_side"), [(1, 28, 14), (3, 28, 4), (4, 56, 4)])
def test_each_block_doubles_the_width_and_halves_the_resolution(n_blocks, side, out_side):
    encoder = conv_encoder(2, width=5, n_blocks=n_blocks)
    assert encoder.out_dim == 5 * 2 ** (n_blocks - 1)
    convs = [m for m in encoder if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [5 * 2**i for i in range(n_blocks)] and convs[0].in_channels == 2
    x = torch.rand(3, 2, side, side)
    assert encoder(x).shape == (3, encoder.out_dim)
    assert encoder[:-2](x).shape[-2:] == (out_side, out_side)  # before pooling: ceil(side / 2^n_blocks)


def test_the_output_is_the_mean_of_the_last_feature_map():
    torch.manual_seed(0)
    encoder = conv_encoder(1, width=4, n_blocks=2).eval()
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(encoder(x), encoder[:-2](x).mean(dim=(2, 3)))
    assert (encoder(x) >= 0).all()  # after a ReLU


def test_no_blocks_is_refused():
    with pytest.raises(ValueError, match="n_blocks must be at least 1"):
        conv_encoder(n_blocks=0)
