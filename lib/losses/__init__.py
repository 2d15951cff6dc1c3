"""Losses shared by the studies, one method per module; each takes embeddings (and labels or indices).

* :mod:`.contrastive` - InfoNCE and its forms: SimCLR's NT-Xent, CLIP's symmetric loss.
* :mod:`.triplet` - the triplet margin loss over index triplets (MuseCL, Tile2Vec).
* :mod:`.rnc` - Rank-N-Contrast.
* :mod:`.dino`, :mod:`.clustering`, :mod:`.reconstruction` - DINO self-distillation and its auxiliary terms.
"""
