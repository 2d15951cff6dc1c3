"""The musecl study: multi-semantic contrastive learning of region embeddings for socioeconomic prediction.

Yong and Zhou, "MuseCL: Predicting Urban Socioeconomic Indicators via
Multi-Semantic Contrastive Learning" (IJCAI 2024). Aerial images are paired
by the regions' POI distributions and street-level views by their mobility
patterns (:mod:`lib.data.semantic_pairs`); each image encoder learns from
triplets of regions (:mod:`lib.losses.triplet`); an attentional fusion
(:mod:`lib.models.fusion`) of the two is aligned with the regions' POI text,
embedded by the packaged MiniLM (:class:`lib.models.text.TextEmbeddingCache`).

Stages: ``musecl_text`` embeds every city's POI texts once (cached);
``musecl_train@<city>`` trains, once per training seed, the encoders from
semantic, neighbour, random and oracle pairs, the baselines (Tile2Vec, SimCLR)
and the fusions of one generated city (:mod:`.train`); ``musecl_eval`` probes
every embedding of every city and seed under spatial block cross-validation
with a gap and under the reference protocol, against out-of-fold oracles and
ceilings from the cities' truth (:mod:`.evaluate`), as ladders and claims
(:mod:`.summary`).
"""

from lib.stage import Out, Stage, committed
from lib.studies.musecl.params import (
    MuseclEvalParams,
    MuseclParams,
    MuseclTextParams,
    MuseclTrainParams,
)

TITLE = "MuseCL: multi-semantic contrastive region embeddings"
QUESTION = (
    "Does fusing aerial and street-level embeddings learned from POI and mobility pairs, aligned with POI text, "
    "predict a region's socioeconomic outcomes better than any single modality, and how close does it come "
    "to what the data allow?"
)
FIGURES = (  # under results/, for the front page
    "musecl/figures/ladder_spatial.png",
    "musecl/*/figures/pairs.png",
    "musecl/*/figures/attention.png",
)
SECTIONS = {"musecl": MuseclParams}
STAGES = (
    Stage("musecl_text", "musecl", "musecl", MuseclTextParams, deps=("datasets/{musecl.cities}",),
          outs=("datasets/musecl_text",
                Out("datasets/text_cache/minilm.npz", persist=True,
                    comment="the cache of POI-text embeddings outlives reruns: only new texts are encoded"))),
    Stage("musecl_train", "musecl", "musecl", MuseclTrainParams, {"city": "cities"}, each={"city": "musecl.cities"},
          deps=("datasets/{city}", "datasets/musecl_text"),
          outs=("models/musecl/{city}", "datasets/musecl/{city}", "results/musecl/{city}")),
    Stage("musecl_eval", "musecl", "musecl", MuseclEvalParams,
          deps=("datasets/{musecl.cities}", "datasets/musecl/{musecl.cities}"),
          outs=("results/musecl/figures", "results/musecl/tables", "results/musecl/summary.json"),
          metrics=(committed("results/musecl/metrics.json"),)),
)
# What paper/sections/musecl.typ reads.
PAPER = ("results/musecl/summary.json", "results/musecl/figures", "results/musecl/river_city/summary.json",
         "results/musecl/river_city/figures")
