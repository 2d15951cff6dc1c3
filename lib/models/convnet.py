"""A plain strided CNN encoder for digits and digit scenes, cheap enough to explain on a CPU.

Attribution benchmarks call the encoder hundreds of thousands of times (RISE
masks, integration steps, insertion and deletion curves). The ResNet of
:func:`lib.models.backbone.small_resnet` keeps 28 px at full resolution through
its stem and first stage (about 12 M multiply-adds per digit); halving the
resolution in every block costs about 0.5 M for the same 28 px digit, so a
benchmark that would take an hour takes minutes.
"""

from __future__ import annotations

from torch import nn


def conv_encoder(in_chans: int = 1, width: int = 16, n_blocks: int = 3) -> nn.Sequential:
    """Conv(3x3, stride 2)-BatchNorm-ReLU blocks, then global average pooling.

    Block ``i`` has ``width * 2**i`` channels and halves the resolution (rounding
    up), so a 28 px digit becomes a 4 x 4 map after three blocks and a 56 px
    scene after four. Shapes: (B, in_chans, H, W) -> (B, width * 2**(n_blocks - 1)).
    The output dimension is also stored as the attribute ``out_dim``.
    """
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be at least 1, got {n_blocks}")
    layers: list[nn.Module] = []
    channels = in_chans
    for i in range(n_blocks):
        out = width * 2**i
        layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
        channels = out
    encoder = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    encoder.out_dim = channels
    return encoder


def conv_blocks(encoder: nn.Sequential) -> list[list[str]]:
    """The submodule names of each Conv-BatchNorm block of a :func:`conv_encoder`, from the top (output) block
    down: ``[["6", "7"], ["3", "4"], ["0", "1"]]`` for three blocks (the layers a cascading randomisation
    re-draws one after another, :func:`lib.explain.sanity.cascading_randomisation`)."""
    names = [name for name, module in encoder.named_children() if isinstance(module, (nn.Conv2d, nn.BatchNorm2d))]
    if not names or len(names) % 2:
        raise ValueError("not a conv_encoder: expected Conv2d-BatchNorm2d pairs")
    return [names[i : i + 2] for i in range(0, len(names), 2)][::-1]
