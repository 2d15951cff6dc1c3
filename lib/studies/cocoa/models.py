"""The COCOA study's trained models, one set per seed: where they live, how one repetition trains them, and
how ``cocoa_eval`` loads them.

Repetition ``s`` holds out its own digits, builds its own scenes, and trains the
SimCLR encoder, its linear probe and the image-text encoder from seed ``s``;
``cocoa_eval`` explains them with draws of seed ``s``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from lib.data.mnist import MnistDataset
from lib.data.splits import Split
from lib.runtime import Runtime
from lib.studies.cocoa import image_text, simclr, supervised
from lib.studies.cocoa.data import SceneSets
from lib.studies.cocoa.params import CocoaTrainParams
from lib.training import checkpoint_path, run_fingerprint

#: The run name of cocoa_train's checkpoints: ``checkpoints/cocoa/<model>/seed_<s>.pt``.
CHECKPOINT_RUN = "cocoa"


@dataclass(frozen=True)
class ModelFiles:
    """The files of one seed under the models directory: ``<kind>/seed_<s>.safetensors``."""

    root: Path
    seed: int

    def path(self, kind: str) -> Path:
        return self.root / kind / f"seed_{self.seed}.safetensors"

    @property
    def simclr(self) -> Path:
        return self.path("simclr")

    @property
    def probe(self) -> Path:
        return self.path("probe")

    @property
    def image_text(self) -> Path:
        return self.path("image_text")

    @property
    def supervised(self) -> Path:
        return self.path("supervised")


def captions_file(root: str | os.PathLike) -> Path:
    """The caption embeddings, shared by every seed (the text encoder is frozen and deterministic)."""
    return Path(root) / "captions.safetensors"


#: The trainings of a seed, in the order they run; each stops at its validation plateau.
TRAININGS = ("simclr", "supervised", "image_text")


@dataclass(frozen=True)
class Trained:
    """What training one seed reports: per training (:data:`TRAININGS`) its record
    (:func:`~lib.studies.cocoa.simclr.training_record`: history with validation scores, selected and last epoch,
    whether it stopped at its plateau), and accuracies."""

    seed: int
    trainings: dict[str, dict]
    probe_accuracy: dict[str, float]
    caption_matching_accuracy: float


def train_seed(
    cfg: CocoaTrainParams, seed: int, digits: Split[MnistDataset], scene_sets: SceneSets, caption_embeddings: Tensor,
    root: str | os.PathLike, rt: Runtime, progress: bool = True, run_name: str = CHECKPOINT_RUN,
) -> Trained:
    """Train and save repetition ``seed``'s models, each to its validation plateau: SimCLR, the probe on its frozen
    representation (fit and held-out accuracy), the supervised bound of SimCLR's architecture and the image-text
    encoder (caption matching on held-out single-digit scenes).

    The trainings checkpoint to ``checkpoint_path(f"{run_name}/<model>", seed)``, so a stage killed in a later
    seed reruns only what is unfinished; a checkpoint of other parameters, data or code is not resumed.
    """
    files = ModelFiles(Path(root), seed)
    # not the seeds list: adding a seed must not retrain the others
    config = {"study": "cocoa", "seed": seed, "root": str(root), "params": cfg.model_dump(mode="json", exclude={"seeds"})}
    model, result = simclr.train_simclr(
        cfg, digits, seed, progress, checkpoint=checkpoint_path(f"{run_name}/simclr", seed),
        fingerprint=run_fingerprint({**config, "model": "simclr"}, data=(digits.fit.images, digits.val.images),
                                    code=("lib.studies.cocoa.simclr",)),
    )
    records = {"simclr": simclr.training_record(result, cfg.simclr.epochs)}
    simclr.save_simclr(files.simclr, model, records["simclr"], cfg, seed)
    features = simclr.representations(model.encoder, digits.fit.images, rt)
    probe = simclr.fit_probe(features, digits.fit.labels, cfg.probe)
    accuracy = {name: simclr.probe_accuracy(model.encoder, probe, part, rt)
                for name, part in (("train", digits.fit), ("test", digits.test))}
    simclr.save_probe(files.probe, probe, {"seed": seed, "accuracy": accuracy})
    classifier, result = supervised.train_supervised(
        cfg, digits, seed, progress, checkpoint=checkpoint_path(f"{run_name}/supervised", seed),
        fingerprint=run_fingerprint({**config, "model": "supervised"}, data=(digits.fit.images, digits.val.images),
                                    code=("lib.studies.cocoa.supervised",)),
    )
    supervised.save_supervised(files.supervised, classifier, result, cfg, seed)
    records["supervised"] = simclr.training_record(result, cfg.supervised.epochs)
    encoder, loss, result = image_text.train_image_text(
        cfg, scene_sets.train, scene_sets.val, caption_embeddings, seed, progress,
        checkpoint=checkpoint_path(f"{run_name}/image_text", seed),
        fingerprint=run_fingerprint({**config, "model": "image_text"},
                                    data=(scene_sets.train.images, scene_sets.train.labels, scene_sets.val.images,
                                          caption_embeddings),
                                    code=("lib.studies.cocoa.image_text",)),
    )
    image_text.save_image_text(files.image_text, encoder, loss, result, cfg, seed)
    records["image_text"] = simclr.training_record(result, cfg.clip.epochs)
    matching = image_text.caption_matching_accuracy(encoder, caption_embeddings, scene_sets.test, rt)
    return Trained(seed, records, accuracy, matching)


@dataclass(frozen=True)
class SeedModels:
    """Repetition ``seed``'s SimCLR encoder h, probe, supervised classifier and image-text encoder, in eval mode on
    the runtime's device, and the record of each training {name: record} (:data:`TRAININGS`)."""

    seed: int
    encoder: nn.Module
    probe: nn.Module
    classifier: nn.Module
    image_encoder: nn.Module
    trainings: dict[str, dict]


def load_seed(root: str | os.PathLike, seed: int, rt: Runtime) -> SeedModels:
    """The models :func:`train_seed` saved for ``seed``."""
    files = ModelFiles(Path(root), seed)
    missing = [str(p) for p in (files.simclr, files.probe, files.supervised, files.image_text) if not p.exists()]
    if missing:
        raise FileNotFoundError(f"no models of seed {seed}: {', '.join(missing)} missing (run cocoa_train)")
    model, simclr_meta = simclr.load_simclr(files.simclr)
    probe, _ = simclr.load_probe(files.probe)
    classifier, supervised_meta = supervised.load_supervised(files.supervised)
    image_encoder, image_text_meta = image_text.load_image_text(files.image_text)
    trainings = {"simclr": simclr_meta["training"], "supervised": supervised_meta["training"],
                 "image_text": image_text_meta["training"]}
    return SeedModels(seed, rt.prepare(model.encoder).eval(), rt.prepare(probe).eval(), rt.prepare(classifier).eval(),
                      rt.prepare(image_encoder).eval(), trainings)
