"""Benchmark of the synthetic-city builder: speed, and memory that does not grow with the city.

Builds the default river city (1,024 tiles of 64 px) and a river city ten
times larger (80 x 128 = 10,240 tiles), each in a fresh process, and
prints tiles per second and peak memory: the growth of the process's
resident-set high-water mark (``ru_maxrss``) from just before the build,
so the libraries' import footprint is left out. Two peaks are shown: at the
end of the stream that renders and writes the tiles (a block of 4 x 4 at a
time) and the regions (a row at a time: aerial image, POIs, street views),
and at the end of the build, which adds the outcomes, the tables and the
flows (gravity-model trips, computed a chunk of origins at a time, so the
pairs of regions, which grow with the square of the area, are never all in
memory). A builder that held every tile image would need ten times the
memory for the larger city; a streaming one about the same.

Run with ``python tests/benchmarks/bench_city.py`` (``make bench``); it takes
two to three minutes on two cores.
"""

from __future__ import annotations

import multiprocessing
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _measure(config_json: str, out_dir: str) -> dict:
    """Build one city in this (fresh) process; return its time and memory figures."""
    from lib.data.city import CityConfig, build_city

    def high_water_kb() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def at_end_of_stream(done: int, total: int) -> None:
        if done == total:
            streamed_kb.append(high_water_kb())

    config = CityConfig.model_validate_json(config_json)
    streamed_kb: list[int] = []
    before_kb = high_water_kb()
    start = time.perf_counter()
    build_city(config, Path(out_dir) / config.name, progress=at_end_of_stream)
    seconds = time.perf_counter() - start
    after_kb = high_water_kb()
    on_disk = sum(p.stat().st_size for p in (Path(out_dir) / config.name).iterdir())
    return {
        "name": config.name,
        "tiles": config.n_tiles,
        "seconds": seconds,
        "tiles_per_s": config.n_tiles / seconds,
        "stream_peak_mib": (streamed_kb[0] - before_kb) / 1024,
        "peak_mib": (after_kb - before_kb) / 1024,
        "image_mib": config.n_tiles * 4 * config.tile_px**2 / 2**20,
        "disk_mib": on_disk / 2**20,
    }


def _in_fresh_process(config, out_dir: str) -> dict:
    # A new interpreter per build: ru_maxrss is a per-process high-water mark.
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_measure, config.model_dump_json(), out_dir).result()


def main() -> int:
    from lib.data.city import river_city

    default = river_city()
    larger = river_city(name="river_city_10x", grid=(80, 128))
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_city_") as out:
        for config in (default, larger):
            result = _in_fresh_process(config, out)
            results.append(result)
            print(f"{result['name']:<15} {result['tiles']:>6} tiles {result['seconds']:6.1f} s "
                  f"{result['tiles_per_s']:6.1f} tiles/s | peak +{result['stream_peak_mib']:5.1f} MiB streaming, "
                  f"+{result['peak_mib']:5.1f} MiB whole build | all images {result['image_mib']:5.1f} MiB, "
                  f"on disk {result['disk_mib']:5.1f} MiB")
    small, big = results
    print(f"10x city / default: tiles x{big['tiles'] / small['tiles']:.1f}, "
          f"time x{big['seconds'] / small['seconds']:.2f}, "
          f"tiles/s x{big['tiles_per_s'] / small['tiles_per_s']:.2f}, "
          f"peak memory x{big['stream_peak_mib'] / small['stream_peak_mib']:.2f} streaming, "
          f"x{big['peak_mib'] / small['peak_mib']:.2f} whole build")
    print(f"default river city: {small['seconds']:.1f} s for {small['tiles']} tiles (budget: well under 90 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
