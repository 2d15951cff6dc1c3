"""TCAV's positive control: an image model whose use of a concept per outcome interval is known by construction.

Before TCAV reads the trained encoders, it must find an effect planted where a
model certainly uses it (Adebayo et al. 2018's habit, applied to concepts). The
control model is

* a **fraction encoder** ``e``: tile (B, C, H, W) -> per-band standardisation ->
  ``features`` (3x3 convolution, stride 2, ReLU, twice: (B, w, H/4, W/4)) -> a
  1x1 convolution to K class logits per cell -> softmax over the classes ->
  mean over the cells = predicted land-cover fractions ``f`` (B, K), trained on
  the fit tiles to the true fractions with the cross-entropy
  ``-sum_k f*_k log f_k`` (stopped at its validation plateau);
* a **planted head** ``h`` on ``f``, no parameter learnt::

      b(f) = sum_{k != g} w_k f_k / (1 - f_g)          (the outcome of the tile's non-g land cover)
      h(f) = b(f) + a * 1[b(f) > t] * f_g

  with ``g`` the planted concept (green urban space), ``w_k`` the city's
  generating weights of the other classes, ``t`` a quantile of ``b`` on the fit
  tiles and ``a = effect * sd(b)``.

``b`` depends on the shares of the other classes among themselves only, so
giving a tile more of ``g`` at the expense of the others in proportion
(``f_g -> f_g + d``, ``f_k -> f_k (1 - f_g - d) / (1 - f_g)``: fractions sum to
one) leaves ``b`` unchanged and moves ``h`` by exactly ``a * 1[b > t] * d``:
the concept matters in the upper outcome interval only (:func:`finite_difference`
measures it on the model). TCAV then runs with the study's own code
(:func:`lib.explain.tcav.compute_cavs`, :func:`lib.explain.tcav.score_by_interval`,
the same concept and random sets, the same significance test) at the encoder's
``features``, with the outcome intervals cut on the control model's own output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import r2_score
from torch import nn

from lib.data.splits import Split
from lib.data.tiles import TileData
from lib.eval.encode import encode
from lib.explain.tcav import compute_cavs, make_concept, outcome_intervals, random_concepts, score_by_interval
from lib.runtime import Runtime, runtime, seed_everything
from lib.studies.concepts.params import ConceptsControl, ConceptsEvalParams
from lib.studies.concepts.train import epoch_batches
from lib.training import fit

LAYER = "encoder.features"  # the control's TCAV layer


class FractionEncoder(nn.Module):
    """Tile (B, C, H, W) -> predicted land-cover fractions (B, K) (module docstring)."""

    def __init__(self, in_chans: int, n_classes: int, width: int, band_mean: torch.Tensor, band_std: torch.Tensor):
        super().__init__()
        self.register_buffer("band_mean", band_mean.reshape(1, in_chans, 1, 1).float())
        self.register_buffer("band_std", band_std.reshape(1, in_chans, 1, 1).float())
        self.features = nn.Sequential(nn.Conv2d(in_chans, width, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU())
        self.classify = nn.Conv2d(width, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classify(self.features((x - self.band_mean) / self.band_std))
        return logits.softmax(dim=1).mean(dim=(2, 3))


class PlantedHead(nn.Module):
    """``h(f) = b(f) + a 1[b(f) > t] f_g`` with ``b(f) = sum_{k != g} w_k f_k / (1 - f_g)``: (B, K) -> (B, 1).

    ``weights`` (K,) are the ``w_k`` (the entry of ``g`` is ignored); ``concept`` the index ``g``.
    """

    def __init__(self, weights: torch.Tensor, concept: int, threshold: float, effect: float):
        super().__init__()
        if not 0 <= concept < len(weights):
            raise ValueError(f"concept index {concept} outside the {len(weights)} classes")
        others = weights.clone().double()
        others[concept] = 0.0
        self.register_buffer("weights", others.float())
        self.concept, self.threshold, self.effect = concept, float(threshold), float(effect)

    def base(self, f: torch.Tensor) -> torch.Tensor:
        """``b(f)`` (B,): the generator's outcome of the non-``g`` land cover, renormalised to sum to one."""
        rest = (1 - f[:, self.concept]).clamp_min(1e-6)
        return (f @ self.weights.to(f.dtype)) / rest

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        b = self.base(f)
        upper = (b > self.threshold).to(f.dtype)  # a step: its derivative is 0, the concept's slope is a or 0
        return (b + self.effect * upper * f[:, self.concept]).unsqueeze(1)


class PlantedModel(nn.Module):
    """Tile -> :class:`FractionEncoder` -> :class:`PlantedHead`: (B, C, H, W) -> (B, 1)."""

    def __init__(self, encoder: FractionEncoder, head: PlantedHead):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def substitute(f: torch.Tensor, concept: int, delta: torch.Tensor | float) -> torch.Tensor:
    """Fractions with ``delta`` more of ``concept``, taken from the other classes in proportion (rows sum as before)."""
    rest = (1 - f[:, concept]).clamp_min(1e-6)
    delta = torch.as_tensor(delta, dtype=f.dtype).expand(len(f))
    out = f * ((rest - delta) / rest).unsqueeze(1)
    out[:, concept] = f[:, concept] + delta
    return out


def finite_difference(head: PlantedHead, f: torch.Tensor, delta: float) -> np.ndarray:
    """The head's response to more of its concept, per tile (B,): ``(h(f') - h(f)) / d`` with ``f'`` from
    :func:`substitute` and ``d = min(delta, (1 - f_g) / 2)`` (a tile nearly all ``g`` has little left to give)."""
    with torch.no_grad():
        f = f.double()
        d = torch.minimum(torch.full((len(f),), float(delta), dtype=f.dtype), (1 - f[:, head.concept]) / 2)
        d = d.clamp_min(1e-9)
        h0 = PlantedHead(head.weights.double(), head.concept, head.threshold, head.effect)
        return ((h0(substitute(f, head.concept, d)) - h0(f))[:, 0] / d).numpy()


def train_fraction_encoder(data: TileData, split: Split, cfg: ConceptsControl, rt: Runtime, seed: int,
                           batch_size: int) -> tuple[FractionEncoder, dict]:
    """The fraction encoder of seed ``seed`` on the fit tiles, kept at its best validation fraction R^2."""
    if data.concepts is None:
        raise ValueError("the positive control needs the tiles' concept fractions")
    seed_everything(seed)
    images, fractions = data.images, torch.from_numpy(data.concepts.to_numpy(np.float32))
    fit_images = images[torch.from_numpy(split.fit)]
    mean, std = fit_images.mean(dim=(0, 2, 3)), fit_images.std(dim=(0, 2, 3)).clamp_min(1e-6)
    encoder = rt.prepare(FractionEncoder(images.shape[1], fractions.shape[1], cfg.width, mean, std))
    val_images, val_fractions = images[torch.from_numpy(split.val)], fractions[split.val].numpy()

    def loss_fn(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return -(target * predicted.float().clamp_min(1e-8).log()).sum(dim=1).mean()

    def validate(net: nn.Module) -> float:
        return float(r2_score(val_fractions, encode(net, val_images, batch_size, rt).numpy(),
                              multioutput="variance_weighted"))

    optimizer = torch.optim.AdamW(encoder.parameters(), lr=cfg.lr)
    result = fit(encoder, loss_fn, epoch_batches(fit_images, fractions[split.fit], cfg.batch_size, seed), optimizer,
                 epochs=cfg.epochs, runtime=rt, validate=validate, patience=cfg.patience, progress=False)
    encoder.load_state_dict(result.best_state)
    return encoder.eval(), {"best_epoch": result.best_epoch, "last_epoch": result.last_epoch, "max_epochs": cfg.epochs,
                            "stopped_at_plateau": bool(result.stopped_at_plateau), "history": result.history}


@dataclass
class ControlRun:
    """One seed's positive control: the per-interval table, the encoder's fraction R^2 and training record."""

    seed: int
    table: pd.DataFrame
    fraction_r2: float
    training: dict


def run_control(data: TileData, split: Split, concept_members: dict[str, np.ndarray], cfg: ConceptsEvalParams,
                n_random: int, seed: int) -> ControlRun:
    """Train the control of seed ``seed``, explain it with TCAV on the test tiles, measure its true response.

    The concept sets are the study's (``concept_members``, from the fit and
    validation tiles) and the random sets are drawn as for the encoders. The
    returned table has one row per outcome interval (cut on the control's own
    output over the test tiles): the mean finite difference of the output along
    more ``cfg.control.concept`` (:func:`finite_difference`), the share of tiles
    above the threshold, the concept's mean TCAV ``statistic`` over the runs,
    its significance, whether the interval holds a planted effect (a tile
    above the threshold) and ``recovered`` (TCAV significant on the side of 0.5
    that the finite difference takes where the effect is planted; not
    significant where no tile of the interval has it).
    """
    c, t = cfg.control, cfg.tcav
    if data.true_effects is None or c.concept not in data.concepts.columns:
        raise ValueError(f"the positive control needs the generator's weights and the concept {c.concept!r}")
    rt = runtime(cfg.device)
    bs = cfg.inference_batch_size
    encoder, training = train_fraction_encoder(data, split, c, rt, seed, bs)
    test_images = data.images[torch.from_numpy(split.test)]
    predicted = encode(encoder, data.images, bs, rt).double()
    fraction_r2 = float(r2_score(data.concepts.to_numpy()[split.test], predicted[split.test].numpy(),
                                 multioutput="variance_weighted"))
    names = list(data.concepts.columns)
    g = names.index(c.concept)
    weights = torch.tensor([float(data.true_effects.get(k, 0.0)) for k in names])
    probe = PlantedHead(weights, g, 0.0, 0.0)
    base_fit = probe.base(predicted[split.fit].float()).double().numpy()
    head = PlantedHead(weights, g, float(np.quantile(base_fit, c.threshold_quantile)), c.effect * float(base_fit.std()))
    model = rt.prepare(PlantedModel(encoder, head)).eval()
    output = encode(model, test_images, bs, rt).double().numpy()[:, 0]
    response = finite_difference(head, predicted[split.test], c.delta)
    upper = head.base(predicted[split.test].float()).numpy() > head.threshold

    def on_device(idx: np.ndarray) -> torch.Tensor:
        return data.images[torch.from_numpy(idx)].to(rt.device)

    concepts = [make_concept(i, name, on_device(idx)) for i, (name, idx) in enumerate(concept_members.items())]
    pool = np.concatenate([split.fit, split.val])
    randoms = random_concepts(on_device(pool), n_runs=n_random, set_size=min(t.set_size, len(pool)), seed=seed)
    cavs = compute_cavs(model, LAYER, concepts, randoms)
    tcav = score_by_interval(model, LAYER, test_images.to(rt.device), output, cavs, randoms[0].name,
                             n_intervals=t.n_intervals, alpha=t.alpha, bonferroni=t.bonferroni, batch_size=bs)
    index, _ = outcome_intervals(output, t.n_intervals)
    mine = tcav[tcav["concept"] == c.concept]
    rows = []
    for i in range(t.n_intervals):
        inside = index == i
        runs = mine[mine["interval"] == i]
        fd = float(response[inside].mean()) if inside.any() else np.nan
        statistic = float(runs[t.statistic].mean()) if len(runs) else np.nan
        significant = bool(runs["significant"].iloc[0]) if len(runs) else False
        planted = bool(upper[inside].any())  # by construction: some tile of the interval lies above t
        recovered = (significant and np.sign(statistic - 0.5) == np.sign(fd)) if planted else not significant
        rows.append({"interval": i, "finite_difference": fd, "upper_share": float(upper[inside].mean()) if inside.any()
                     else np.nan, "tcav": statistic, "significant": significant, "planted": planted,
                     "recovered": bool(recovered) if len(runs) else False})
    return ControlRun(seed, pd.DataFrame(rows), fraction_r2, training)
