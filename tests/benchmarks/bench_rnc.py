"""Benchmark of the vectorised Rank-N-Contrast loss (Zha et al., NeurIPS 2023).

Compares :func:`lib.losses.rnc.rnc_loss` (forward + backward, 256 images x 2
views = 512 rows, feature dim 512) with two other ways of computing the same loss:

* the form of the official implementation (github.com/kaiwenzha/Rank-N-Contrast,
  ``loss.py``), which is what a user of RNC has today: pairwise feature
  distances by broadcasting an (N, N, d) difference, max-shifted
  exponentials, and a Python loop over the positive's column k of the
  off-diagonal (N, N - 1) matrices, vectorised over the N anchors. It is
  written here from the formula (:func:`positive_loop_rnc`), checked equal to
  the library loss, and timed at full size: the printed ratio is the gain
  over what a user has today;
* a reference that loops in Python over the ordered pairs (i, j) and
  vectorises only the inner sum over k. It costs ~0.2 ms per pair, i.e.
  minutes for the 261,632 pairs at full size, so it is timed on smaller
  batches and extrapolated at its measured cost per pair. That is a lower
  bound on its full-size time (its inner sum grows with N), so the printed
  speed ratio is a lower bound too; the output says so.

Peak memory is read from the torch profiler (``profile_memory=True``, via its
private ``experimental_event_tree``): the running total of live bytes of the
CPU tensors allocated during the forward + backward pass, maximised over the
pass (the inputs, allocated before, are not counted; the gradient is). Run with
``python tests/benchmarks/bench_rnc.py`` (``make bench``); not a pytest file.

Then the concepts study's training steps at the default parameters of
params.yaml (RNC on two augmented views per tile; the L1 baseline on one),
on synthetic four-band 64 px tiles, against the bare ResNet-10's forward and
backward on the same images (both views for RNC) in the same run
(:mod:`step_timing`).
"""

import statistics
import time

import numpy as np
import pandas as pd
import torch
from step_timing import bare_seconds, report, short_fits  # this folder is on the path of a script run
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

from lib.data.splits import Split
from lib.data.tiles import TileData
from lib.losses.rnc import rnc_loss
from lib.params import read_params, validate
from lib.studies.concepts.params import ConceptsTrainParams
from lib.studies.concepts.train import train_variant

N_IMAGES = 256
DIM = 512
REPEATS = 3
LOOP_SIZES = (16, 32)  # images; rows N = 2 x images
TARGET_SPEEDUP = 10.0


def pair_loop_rnc(features: torch.Tensor, labels: torch.Tensor, temperature: float = 2.0):
    """The RnC loss (Zha et al., Sec. 3) with Python loops over anchors i and positives j."""
    views = torch.cat([features[:, 0], features[:, 1]])
    y = labels.reshape(labels.shape[0], -1).repeat(2, 1)
    n_views = views.shape[0]
    total = views.new_zeros(())
    for i in range(n_views):
        s_i = -(views[i] - views).norm(dim=1) / temperature
        d_i = (y[i] - y).abs().sum(dim=1)
        not_anchor = torch.arange(n_views) != i
        for j in range(n_views):
            if j == i:
                continue
            in_denominator = not_anchor & (d_i >= d_i[j])
            total = total + torch.logsumexp(s_i[in_denominator], dim=0) - s_i[j]
    return total / (n_views * (n_views - 1))


def positive_loop_rnc(features: torch.Tensor, labels: torch.Tensor, temperature: float = 2.0):
    """The RnC loss in the official implementation's form: a loop over the positive's column k.

    With views v (N, d) and labels y (N, L), s_ij = -||v_i - v_j|| / tau (by
    broadcasting v_i - v_j to (N, N, d)), shifted by each row's maximum m_i
    (which cancels in l_ij) and d_ij = ||y_i - y_j||_1; dropping the diagonal
    leaves (N, N - 1) matrices whose column k holds anchor i's k-th partner.
    For each k, over all anchors i at once:
    l_ik = -(s_ik - m_i) + log sum_{k' : d_ik' >= d_ik} exp(s_ik' - m_i), and
    L = sum_{i, k} l_ik / (N (N - 1)).
    """
    views = torch.cat([features[:, 0], features[:, 1]])
    y = labels.reshape(labels.shape[0], -1).repeat(2, 1)
    n = views.shape[0]
    similarity = -(views[:, None, :] - views[None, :, :]).norm(dim=-1) / temperature
    similarity = similarity - similarity.max(dim=1, keepdim=True).values.detach()
    distance = (y[:, None, :] - y[None, :, :]).abs().sum(dim=-1)
    partners = ~torch.eye(n, dtype=torch.bool)
    s = similarity[partners].view(n, n - 1)
    d = distance[partners].view(n, n - 1)
    exp_s = s.exp()
    total = views.new_zeros(())
    for k in range(n - 1):
        in_denominator = (d >= d[:, k : k + 1]).to(exp_s.dtype)
        total = total - (s[:, k] - (in_denominator * exp_s).sum(dim=1).log()).sum()
    return total / (n * (n - 1))


def check_equal(n_images: int = 24) -> float:
    """Largest absolute difference of loss and gradient between the library and the official form."""
    worst = 0.0
    for seed in range(3):
        features, labels = make_batch(n_images, seed)
        ours = rnc_loss(features.double(), labels)
        theirs = positive_loop_rnc(features.double(), labels)
        (g_ours,) = torch.autograd.grad(ours, features)
        (g_theirs,) = torch.autograd.grad(theirs, features)
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-8, atol=1e-10)
        worst = max(worst, float((ours - theirs).abs().detach()), float((g_ours - g_theirs).abs().max()))
    return worst


def make_batch(n_images: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(n_images, 2, DIM, generator=gen).requires_grad_(True)
    labels = torch.randint(0, 50, (n_images,), generator=gen).float()  # with ties
    return features, labels


def time_forward_backward(loss_fn, n_images: int, repeats: int) -> float:
    """Median wall time (s) of loss + backward over ``repeats`` runs."""
    features, labels = make_batch(n_images)
    times = []
    for _ in range(repeats):
        features.grad = None
        start = time.perf_counter()
        loss_fn(features, labels).backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_torch_cpu_bytes(n_images: int, loss_fn=rnc_loss) -> int:
    """Peak live bytes of torch CPU tensors allocated during forward + backward of ``loss_fn``."""
    features, labels = make_batch(n_images)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss_fn(features, labels).backward()
    allocations = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        if event.tag == _EventType.Allocation:
            allocations.append(event)
        stack.extend(event.children)
    allocations.sort(key=lambda e: e.start_time_ns)
    first = allocations[0].extra_fields
    baseline = first.total_allocated - first.alloc_size
    return max(e.extra_fields.total_allocated for e in allocations) - baseline


def main() -> None:
    torch.manual_seed(0)
    n_rows = 2 * N_IMAGES
    print(f"RnC loss benchmark: forward + backward, float32, CPU, "
          f"{torch.get_num_threads()} torch threads")

    time_forward_backward(rnc_loss, N_IMAGES, 1)  # warm-up
    t_vec = time_forward_backward(rnc_loss, N_IMAGES, REPEATS)
    print(f"vectorised  : {N_IMAGES} images x 2 views = {n_rows} rows, dim {DIM}: "
          f"{t_vec * 1e3:.1f} ms (median of {REPEATS})")

    worst = check_equal()
    print(f"official form (loop over the positive k, vectorised over anchors; written here from the formula): "
          f"equal to the library loss in float64 (largest difference of loss and gradient {worst:.1e})")
    time_forward_backward(positive_loop_rnc, N_IMAGES, 1)  # warm-up
    t_official = time_forward_backward(positive_loop_rnc, N_IMAGES, REPEATS)
    peak_official = peak_torch_cpu_bytes(N_IMAGES, positive_loop_rnc)
    print(f"official form at {n_rows} rows: {t_official * 1e3:.1f} ms (median of {REPEATS}), MEASURED; "
          f"peak {peak_official / 2**20:.1f} MiB")
    print(f"gain over the official form (what a user has today): {t_official / t_vec:.1f}x faster, "
          f"measured at {n_rows} rows")

    print("pair loop (Python loops over i, j; inner sum over k vectorised), measured:")
    for n_images in LOOP_SIZES:
        rows = 2 * n_images
        t_loop = time_forward_backward(pair_loop_rnc, n_images, 1)
        t_small_vec = time_forward_backward(rnc_loss, n_images, REPEATS)
        per_pair = t_loop / (rows * (rows - 1))
        print(f"  {rows:4d} rows: loop {t_loop:7.3f} s ({per_pair * 1e6:.0f} us/pair), "
              f"vectorised {t_small_vec * 1e3:7.2f} ms, "
              f"measured ratio {t_loop / t_small_vec:6.0f}x")

    # Extrapolate from the largest measured batch (the last one of the loop).
    t_loop_full = per_pair * n_rows * (n_rows - 1)
    ratio = t_loop_full / t_vec
    print(f"pair loop at {n_rows} rows: >= {t_loop_full:.0f} s  (EXTRAPOLATED, not measured: "
          f"{rows}-row cost per pair x {n_rows * (n_rows - 1)} pairs; a lower bound)")
    verdict = "meets" if ratio >= TARGET_SPEEDUP else "MISSES"
    print(f"speed ratio at {n_rows} rows: >= {ratio:.0f}x (lower bound; "
          f"{verdict} the >= {TARGET_SPEEDUP:.0f}x target)")

    peak = peak_torch_cpu_bytes(N_IMAGES)
    n_by_n = n_rows * n_rows * 4
    print(f"peak memory (vectorised, {n_rows} rows): {peak / 2**20:.1f} MiB of live torch CPU "
          f"tensors allocated in the pass, from torch.profiler allocator totals "
          f"(= {peak / n_by_n:.1f} float32 N x N matrices; an N^3 float32 tensor "
          f"would be {n_rows**3 * 4 / 2**20:.0f} MiB); the official form: "
          f"{peak_official / 2**20:.1f} MiB ({peak_official / peak:.1f}x)")


def synthetic_tiles(n: int, size: int = 64, seed: int = 0) -> TileData:
    """``n`` random four-band tiles with a random outcome (a step's cost does not depend on the pixels)."""
    rng = np.random.default_rng(seed)
    return TileData(
        images=torch.from_numpy(rng.random((n, 4, size, size), dtype=np.float32)), outcome=rng.normal(size=n),
        outcome_name="bench", units="1", tile_ids=np.arange(n), easting=np.zeros(n), northing=np.zeros(n),
        band_names=["red", "green", "blue", "nir"], concepts=pd.DataFrame(index=range(n)), true_effects=None,
    )


def training_steps() -> None:
    """The concepts study's training step per variant against the bare tile encoder on the same images."""
    raw = read_params("params.yaml")["concepts"]
    cfg = validate("concepts", {k: raw[k] for k in ConceptsTrainParams.model_fields}, ConceptsTrainParams)
    for variant, train_cfg, views in (("rnc", cfg.rnc, 2), ("baseline", cfg.baseline, 1)):
        n = train_cfg.batch_size * 6
        data = synthetic_tiles(n)
        split = Split(fit=np.arange(n - 32), val=np.arange(n - 32, n), test=np.arange(0))
        with short_fits() as runs:
            train_variant(cfg, data, split, variant, seed=0, progress=False)
        run = runs[0]
        images = torch.cat([run.batch[0]] * views)  # RNC's step encodes two views of each tile
        encoder = run.model.model.encoder if variant == "rnc" else run.model.encoder
        bare = bare_seconds(encoder, list(encoder.parameters()), images, run.runtime)
        report(f"concepts {variant}", run.median_step_s, bare, f"{len(images)} tiles of 64 px")


if __name__ == "__main__":
    main()
    training_steps()
