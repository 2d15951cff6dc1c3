"""The COCOA study's SimCLR encoder (Chen et al., ICML 2020) and its linear probe."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lib.data import digit_augment as aug
from lib.data.mnist import MnistDataset
from lib.data.splits import Split
from lib.eval.encode import encode
from lib.eval.probes import logistic_probe
from lib.io import load_module, save_module
from lib.losses.ntxent import nt_xent
from lib.models.convnet import conv_encoder
from lib.runtime import Runtime, runtime, seed_everything
from lib.studies.cocoa.params import N_CLASSES, AugmentParams, CocoaTrainParams, ProbeParams
from lib.training import fit


class SimCLR(nn.Module):
    """Encoder h (the representation explained) and projection head g (what NT-Xent sees): x -> g(h(x))."""

    def __init__(self, width: int, projection_dim: int):
        super().__init__()
        self.encoder = conv_encoder(in_chans=1, width=width, n_blocks=3)
        dim = self.encoder.out_dim
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, projection_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


def two_views(x: Tensor, cfg: AugmentParams) -> Tensor:
    """Two independent SimCLR views of a batch, stacked: (B, ...) -> (2B, ...)."""
    settings = cfg.model_dump()
    return torch.cat([aug.simclr_view(x, **settings), aug.simclr_view(x, **settings)])


def example_views(images: Tensor, cfg: AugmentParams, n_views: int, seed: int) -> list[Tensor]:
    """``n_views`` random SimCLR views of each image, for showing what the encoder is trained to equate."""
    generator = torch.Generator().manual_seed(seed)
    return [aug.simclr_view(images, **cfg.model_dump(), generator=generator) for _ in range(n_views)]


def simclr_loss(temperature: float) -> Callable[[Tensor, Tensor], Tensor]:
    """NT-Xent over the projections of :func:`two_views`' stacked batch; labels are ignored."""
    return lambda z, _labels: nt_xent(*z.float().chunk(2), temperature=temperature)


def train_simclr(
    cfg: CocoaTrainParams, digits: Split[MnistDataset], seed: int, progress: bool = True
) -> tuple[SimCLR, list[dict]]:
    """SimCLR (Chen et al. 2020) on the training digits, labels unused, initialised and shuffled from ``seed``;
    the last epoch is kept."""
    rt = runtime(cfg.device)
    generator = seed_everything(seed)
    s = cfg.simclr
    model = rt.prepare(SimCLR(s.width, s.projection_dim))
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    loader = DataLoader(digits.fit, batch_size=s.batch_size, shuffle=True, drop_last=True, generator=generator)
    result = fit(
        model, simclr_loss(s.temperature), lambda epoch: loader, optimizer,
        epochs=s.epochs, runtime=rt, max_steps_per_epoch=s.max_steps_per_epoch, progress=progress,
        augment=lambda x: two_views(x, cfg.augment),
    )
    model.load_state_dict(result.best_state)
    return model.eval(), result.history


def save_simclr(path: str | os.PathLike, model: SimCLR, history: list[dict], cfg: CocoaTrainParams, seed: int) -> None:
    """Safetensors weights with the parameters, the seed and the training history as metadata."""
    save_module(path, model, {"params": cfg.model_dump(), "seed": seed, "history": history})


def load_simclr(path: str | os.PathLike) -> tuple[SimCLR, dict]:
    """A SimCLR model (eval mode) and its metadata from :func:`save_simclr`'s file."""

    def build(state: dict, meta: dict) -> SimCLR:
        s = CocoaTrainParams.model_validate(meta["params"]).simclr
        return SimCLR(s.width, s.projection_dim)

    return load_module(path, build)


def representations(encoder: nn.Module, images: Tensor, rt: Runtime) -> Tensor:
    """h(images) on the runtime's device, without gradients: (N, ...) -> (N, D)."""
    return encode(encoder.eval(), rt.batch(images))


def fit_probe(features: Tensor, labels: Tensor, cfg: ProbeParams) -> nn.Linear:
    """The linear probe of the ten digits on frozen representations (:func:`lib.eval.probes.logistic_probe`)."""
    return logistic_probe(features, labels, N_CLASSES, cfg.regularisation, cfg.max_iter)


def probe_accuracy(encoder: nn.Module, probe: nn.Module, split: MnistDataset, rt: Runtime) -> float:
    """Share of ``split`` whose probe prediction on h(x) is the label."""
    features = representations(encoder, split.images, rt)
    with torch.no_grad():
        predicted = probe.to(features.device)(features).argmax(dim=1).cpu()
    return float((predicted == split.labels).float().mean())


def save_probe(path: str | os.PathLike, probe: nn.Linear, metadata: dict) -> None:
    """The probe's weight (10, D) and bias (10,) as safetensors."""
    save_module(path, probe, metadata)


def load_probe(path: str | os.PathLike) -> tuple[nn.Linear, dict]:
    """The probe (eval mode) and its metadata from :func:`save_probe`'s file."""
    return load_module(path, lambda state, meta: nn.Linear(state["weight"].shape[1], state["weight"].shape[0]))


def corpus_majority_class(encoder: nn.Module, probe: nn.Module, corpus: Tensor, rt: Runtime) -> int:
    """The class the probe predicts most often on the corpus (its modal prediction; ties go to the lowest class).

    COCOA's *corpus majority probability* (Lin et al. 2023, Sec. 4; ``CorpusMajorityProb`` in the reference
    code) follows the probe's probability of this class, not of the corpus's true label.
    """
    features = representations(encoder, corpus, rt)
    with torch.no_grad():
        predicted = probe.to(features.device)(features).argmax(dim=1).cpu()
    return int(torch.bincount(predicted, minlength=N_CLASSES).argmax())


class ClassProbability(nn.Module):
    """The probe's probability of one class: x -> softmax(probe(h(x)))[:, cls], (B, ...) -> (B,)."""

    def __init__(self, encoder: nn.Module, probe: nn.Module, cls: int):
        super().__init__()
        self.encoder, self.probe, self.cls = encoder, probe, cls

    def forward(self, x: Tensor) -> Tensor:
        return self.probe(self.encoder(x)).softmax(dim=1)[:, self.cls]
