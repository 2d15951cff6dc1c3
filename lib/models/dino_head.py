"""DINO's projection head (Caron et al., ICCV 2021, Sec. 3.1 and App. C).

    h = MLP(x)                      in_dim -> hidden -> ... -> hidden -> bottleneck, GELU
    z = h / ||h||_2
    logits = W z,   W_k = v_k / ||v_k||_2   (weight normalisation with gain g = 1)

The last layer has no bias and its rows have unit norm: the gain of the weight
normalisation is fixed to 1, which Caron et al. report stabilises training, so
``logits_k`` is the cosine between ``h`` and the prototype ``v_k``.
"""

from __future__ import annotations

from itertools import pairwise

from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["DinoHead"]


class DinoHead(nn.Module):
    """MLP, L2 normalisation and a unit-norm, bias-free linear layer to ``out_dim``.

    Args:
        in_dim: backbone embedding size.
        out_dim: ``K``, the number of prototypes (DINO's 65536; far fewer suit small data).
        hidden_dim: width of the hidden layers.
        bottleneck_dim: size of the L2-normalised code.
        n_layers: linear layers in the MLP (1 maps ``in_dim`` straight to the bottleneck).
        use_bn: batch normalisation after each hidden linear layer (DINO's ``use_bn_in_head``, its option
            for convolutional backbones): it spreads the codes of a batch whose embeddings start close together.

    Shapes: ``(B, in_dim) -> (B, out_dim)``. Linear weights start from a normal
    distribution of std 0.02 truncated at two standard deviations, biases at 0.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        n_layers: int = 3,
        use_bn: bool = False,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"DinoHead: n_layers must be >= 1, got {n_layers}")
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(pairwise(dims)):
            layers.append(nn.Linear(d_in, d_out))
            if i < n_layers - 1:
                if use_bn:
                    layers.append(nn.BatchNorm1d(d_out))
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.apply(_truncated_normal_init)

        last = nn.Linear(bottleneck_dim, out_dim, bias=False)
        _truncated_normal_init(last)
        self.last_layer = weight_norm(last)
        # original0 is the gain g (out_dim, 1), original1 the direction v.
        gain = self.last_layer.parametrizations.weight.original0
        gain.data.fill_(1.0)
        gain.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        code = F.normalize(self.mlp(x), dim=-1)
        return self.last_layer(code)


def _truncated_normal_init(module: nn.Module, std: float = 0.02) -> None:
    if isinstance(module, nn.Linear):
        # Cut at +-2 std; torch's default bounds (+-2 in absolute value) would not cut at all.
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
