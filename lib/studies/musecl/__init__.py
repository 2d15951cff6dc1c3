"""The musecl study: multi-semantic contrastive learning of region embeddings for socioeconomic prediction.

Yong and Zhou, "MuseCL: Predicting Urban Socioeconomic Indicators via
Multi-Semantic Contrastive Learning" (IJCAI 2024). Aerial images are paired
by the regions' POI distributions and street-level views by their mobility
patterns (:mod:`lib.data.semantic_pairs`); each image encoder learns from
triplets of regions (:mod:`lib.losses.triplet`); an attentional fusion
(:mod:`lib.models.fusion`) of the two is aligned with the regions' POI text,
embedded by the packaged MiniLM (:class:`lib.models.text.TextEmbeddingCache`).

Stages: ``musecl_text`` embeds every city's POI texts once (cached);
``musecl_train@<city>`` trains the encoders, the baselines (Tile2Vec, SimCLR)
and the fusion of one generated city (:mod:`.train`); ``musecl_eval`` probes
every embedding of every city under spatial block cross-validation against
the cities' stored truth (:mod:`.evaluate`).
"""

from lib.stage import Stage
from lib.studies.musecl.params import MuseclEvalParams, MuseclParams, MuseclTextParams, MuseclTrainParams

TITLE = "MuseCL: multi-semantic contrastive region embeddings"
QUESTION = (
    "Does fusing aerial and street-level embeddings learned from POI and mobility pairs, aligned with POI text, "
    "predict a region's socioeconomic outcomes better than any single modality, and how close does it come "
    "to what the data allow?"
)
FIGURES = (  # under results/, for the front page
    "musecl/figures/results_ridge.png",
    "musecl/*/figures/pairs.png",
    "musecl/*/figures/attention.png",
)
SECTIONS = {"musecl": MuseclParams}
STAGES = (
    Stage("musecl_text", "musecl", "musecl", MuseclTextParams),
    Stage("musecl_train", "musecl", "musecl", MuseclTrainParams, {"city": "cities"}),
    Stage("musecl_eval", "musecl", "musecl", MuseclEvalParams),
)
