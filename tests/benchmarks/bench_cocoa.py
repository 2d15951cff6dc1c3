"""Benchmark: batched COCOA attributions versus one explicand at a time.

Integrated Gradients (captum, 32 steps) on the contrastive corpus similarity
(Lin et al., ICLR 2023, Sec. 3) of a small CNN encoder for 28 x 28 images, with a
corpus of 100 and a foil of 100 precomputed representations:

* batched: all explicands in one ``attribute`` call, target in mean form (one
  (D,) direction per forward pass);
* loop: one ``attribute`` call per explicand, target in pairwise form (the
  (B, C) and (B, F) similarity matrices), as a naive user would write it.

Prints both rates (attributions per second, best of a few repeats after a
warm-up, the least disturbed by other processes), their ratio (target >= 3x) and
the largest difference between the two sets of attributions, once on one CPU
thread and once on torch's default thread count. The corpus and foil enter only
through D-dimensional representations, so the two forms cost the same per image;
the gain is that of batching. On one CPU thread a small CNN costs about the same
per image at any batch size, so expect a ratio near 1 there; with several threads
small batches pay for synchronising them (much more so on a busy machine), and on
a GPU for kernel launches. Run with ``python tests/benchmarks/bench_cocoa.py``
(``make bench``); not a pytest file.

Then the study's SimCLR training step at the default parameters of
params.yaml (MNIST digits, two augmented views each, NT-Xent, AdamW) against
the bare encoder's forward and backward on as many images as the two views
(:mod:`step_timing`), in the same run.
"""

import time

import torch
from captum.attr import IntegratedGradients
from step_timing import bare_seconds, report, short_fits  # this folder is on the path of a script run
from torch import nn

from lib.eval.encode import encode
from lib.explain.cocoa import ContrastiveCorpusSimilarity
from lib.params import read_params, validate
from lib.studies.cocoa.data import load_digits
from lib.studies.cocoa.params import CocoaTrainParams
from lib.studies.cocoa.simclr import train_simclr

N_EXPLICANDS = 16
CORPUS_SIZE = 100
FOIL_SIZE = 100
N_STEPS = 32
REPEATS = 3
TARGET_SPEEDUP = 3.0


def small_cnn() -> nn.Module:
    """(B, 1, 28, 28) -> (B, 64)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 64),
    ).eval()


def batched(target: nn.Module, explicands: torch.Tensor) -> torch.Tensor:
    return IntegratedGradients(target).attribute(explicands, n_steps=N_STEPS)


def one_at_a_time(target: nn.Module, explicands: torch.Tensor) -> torch.Tensor:
    explainer = IntegratedGradients(target)
    return torch.cat(
        [explainer.attribute(explicand[None], n_steps=N_STEPS) for explicand in explicands]
    )


def rate(method, target: nn.Module, explicands: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Attributions per second (best of REPEATS after one warm-up) and the result."""
    attributions = method(target, explicands)
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        method(target, explicands)
        times.append(time.perf_counter() - start)
    return len(explicands) / min(times), attributions


def main() -> None:
    torch.manual_seed(0)
    encoder = small_cnn()
    corpus, foil, explicands = torch.rand(
        CORPUS_SIZE + FOIL_SIZE + N_EXPLICANDS, 1, 28, 28
    ).split([CORPUS_SIZE, FOIL_SIZE, N_EXPLICANDS])
    corpus_repr, foil_repr = encode(encoder, corpus), encode(encoder, foil)
    mean_target = ContrastiveCorpusSimilarity(encoder, corpus_repr, foil_repr)
    pairwise_target = ContrastiveCorpusSimilarity(
        encoder, corpus_repr, foil_repr, form="pairwise"
    )

    print(
        f"IG ({N_STEPS} steps), {N_EXPLICANDS} explicands, corpus {CORPUS_SIZE}, "
        f"foil {FOIL_SIZE}; attributions/s, best of {REPEATS}"
    )
    print(f"{'threads':>7}  {'batched, mean':>13}  {'loop, pairwise':>14}  {'speedup':>7}")
    default_threads = torch.get_num_threads()
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        batched_rate, batched_attr = rate(batched, mean_target, explicands)
        loop_rate, loop_attr = rate(one_at_a_time, pairwise_target, explicands)
        print(
            f"{threads:>7}  {batched_rate:>13.1f}  {loop_rate:>14.1f}  "
            f"{batched_rate / loop_rate:>6.1f}x"
        )
    torch.set_num_threads(default_threads)
    print(f"target speedup >= {TARGET_SPEEDUP:.0f}x")
    print(f"max |batched - loop| attribution: {(batched_attr - loop_attr).abs().max().item():.2e}")


def training_steps() -> None:
    """COCOA's SimCLR training step against its bare encoder on the two views' worth of digits."""
    raw = read_params("params.yaml")["cocoa"]
    cfg = validate("cocoa", {k: raw[k] for k in CocoaTrainParams.model_fields}, CocoaTrainParams)
    with short_fits() as runs:
        train_simclr(cfg, load_digits(cfg, seed=0), seed=0, progress=False)
    run = runs[0]
    images = torch.cat([run.batch[0]] * 2)  # the step encodes two views of each digit
    encoder = run.model.encoder
    bare = bare_seconds(encoder, list(encoder.parameters()), images, run.runtime)
    report("COCOA SimCLR", run.median_step_s, bare, f"{len(images)} views of 28 px digits")


if __name__ == "__main__":
    main()
    training_steps()
