"""The map decoder (lib.models.map_decoder): shapes, range, what it may see, and that it learns."""

import pytest
import torch

from lib.losses.reconstruction import masked_reconstruction_loss, random_block_mask
from lib.models.map_decoder import MapDecoder


@pytest.mark.parametrize("height, width", [(64, 64), (16, 40)])
def test_output_shape_and_range(height, width):
    torch.manual_seed(0)
    decoder = MapDecoder(embed_dim=12)
    maps = torch.rand(3, 3, height, width)
    hidden = random_block_mask(3, height, width, 0.5, torch.Generator().manual_seed(0))
    out = decoder(torch.randn(3, 12), maps, hidden)
    assert out.shape == (3, 3, height, width)
    assert ((out >= 0) & (out <= 1)).all()


def test_hidden_pixels_cannot_leak_and_embedding_matters():
    torch.manual_seed(1)
    decoder = MapDecoder(embed_dim=8).eval()
    maps = torch.rand(2, 3, 16, 16)
    hidden = random_block_mask(2, 16, 16, 0.5, torch.Generator().manual_seed(1))
    embedding = torch.randn(2, 8)
    reference = decoder(embedding, maps, hidden)
    changed = torch.where(hidden[:, None], torch.rand(2, 3, 16, 16), maps)
    assert torch.equal(decoder(embedding, changed, hidden), reference)
    assert not torch.allclose(decoder(embedding + 1.0, maps, hidden), reference)


def test_a_few_steps_reduce_the_hidden_error():
    torch.manual_seed(2)
    decoder = MapDecoder(embed_dim=4, width=8)
    maps = torch.rand(4, 3, 16, 16)
    embedding = torch.randn(4, 4)
    hidden = random_block_mask(4, 16, 16, 0.5, torch.Generator().manual_seed(2))
    losses = []
    for _ in range(10):
        decoder.zero_grad()
        loss = masked_reconstruction_loss(decoder(embedding, maps, hidden), maps, hidden)
        loss.backward()
        with torch.no_grad():
            for p in decoder.parameters():
                p -= 1.0 * p.grad
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0]


def test_shape_errors_are_named():
    decoder = MapDecoder(embed_dim=8)
    maps, hidden = torch.rand(2, 3, 16, 16), torch.ones(2, 16, 16, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"multiples of 8, got partial_view \(2, 3, 16, 12\)"):
        decoder(torch.randn(2, 8), maps[..., :12], hidden[..., :12])
    with pytest.raises(ValueError, match=r"embedding \(2, 5\) must be \(B, D\) = \(2, 8\)"):
        decoder(torch.randn(2, 5), maps, hidden)
    message = r"partial_view must be \(B, 3, H, W\), got \(2, 4, 16, 16\)"
    with pytest.raises(ValueError, match=message):
        decoder(torch.randn(2, 8), torch.rand(2, 4, 16, 16), hidden)
    with pytest.raises(ValueError, match=r"hidden_mask must be bool"):
        decoder(torch.randn(2, 8), maps, hidden.float())
