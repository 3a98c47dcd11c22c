"""Issue 15's figures: the decoded-image cache on a folder of >= 50,000 generated 64x64 RGB images.

    pip install scikit-image      # the photographs the crops are cut from (bench only)
    python bench/data_scale.py --images 50000 --small 10000 --steps 300 --batch-size 16 --threads 1

1. Make the folder (once; reused if it is there): random crops of scikit-image's colour photographs (astronaut,
   chelsea, coffee, ...), each a random square of 64 px to half the photo's shorter side, resized to 64x64
   (bicubic), flipped at random, saved as PNG. The smaller size is hard links to the first --small files.
2. First build of the cache with --workers processes: seconds and images/s; then one open of the built cache
   (manifest, every file's stat, the SHA-256 of the whole images file).
3. `ddpm train` in a child process for --steps steps on each size, with the cache and with --no-cache (today's
   in-memory path), on a tiny U-Net (the `tiny` preset, ch 16 -> --ch) so that reading data is a large share of the
   step. Peak RSS from wait4 (ru_maxrss: all resident pages, the mapped file's included), and the peaks of RssAnon
   (private memory) and RssFile (mapped file pages, shared with every process and the page cache) polled from
   /proc every 50 ms. The cache file's pages are dropped from the page cache (posix_fadvise DONTNEED) before every
   cached run, so each starts cold.
4. Time per step from the run's metrics.jsonl (the trainer's own training-time clock; first interval dropped), for
   the cache with prefetch 2 (the default) and 0, and for the in-memory path.

Prints every figure and writes them to WORK/results.json. Nothing here is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "colorwheel", "cat")
PAPER = {"CelebA-HQ 256": (30_000, 256), "LSUN Church 256": (126_227, 256)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=50_000, help="images in the large folder (default 50000)")
    p.add_argument("--small", type=int, default=10_000, help="images in the small folder (default 10000)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=300, help="training steps per run (default 300)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--ch", type=int, default=16, help="the U-Net's base channels (default 16: the tiny preset)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each training run (default 1)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes of the first build (default 2)")
    p.add_argument("--work", type=Path, default=Path("/tmp/ddpmkit-data-scale"), help="folders, runs, results")
    p.add_argument("--reuse", action="store_true",
                   help="keep the folders, builds and training runs of WORK/results.json; measure only the reads")
    args = p.parse_args(argv)
    if not 0 < args.small < args.images:
        p.error("--small must be between 0 and --images")
    return args


def make_folder(root: Path, n: int, size: int, seed: int = 0) -> float:
    """n PNG crops of the photographs under root (kept if already complete); returns the seconds it took."""
    from PIL import Image
    from skimage import data as photos

    if root.is_dir() and len(list(root.glob("*.png"))) == n:
        return 0.0
    root.mkdir(parents=True, exist_ok=True)
    sources = [Image.fromarray(getattr(photos, name)()) for name in PHOTOS]
    rng, start = np.random.default_rng(seed), time.perf_counter()
    for i in range(n):
        src = sources[i % len(sources)]
        side = int(rng.integers(size, min(src.size) // 2 + 1))
        left, top = int(rng.integers(0, src.width - side + 1)), int(rng.integers(0, src.height - side + 1))
        crop = src.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop.save(root / f"{i:06d}.png", compress_level=1)
    return time.perf_counter() - start


def link_subset(big: Path, small: Path, n: int) -> None:
    """The first n files of `big` as hard links under `small`."""
    small.mkdir(parents=True, exist_ok=True)
    for name in sorted(p.name for p in big.glob("*.png"))[:n]:
        if not (small / name).exists():
            os.link(big / name, small / name)


def build_cache(folder: Path, cache: Path, workers: int) -> dict:
    """First build (timed), then a timed open of the complete entry (stat every file, hash the images file)."""
    from ddpmkit.data import load_dataset
    from ddpmkit.data.cache import ImageCache

    start = time.perf_counter()
    ds = load_dataset(str(folder), cache=ImageCache(cache, workers=workers, progress=False))
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    load_dataset(str(folder), cache=ImageCache(cache, progress=False))
    open_s = time.perf_counter() - start
    nbytes = int(np.prod(ds.images.shape))
    return {"images": len(ds), "build_s": build_s, "images_per_s": len(ds) / build_s, "open_s": open_s,
            "bytes": nbytes, "file": str(ds.images.filename)}


def measure_reads(file: str, shape: tuple, batch: int, batches: int = 200, seed: int = 0) -> dict:
    """The pieces of a cached run's data path, alone: SHA-256 of the images file (warm), and gathering `batches`
    random batches from the map, cold (just evicted) and warm, as the trainer's fetch does."""
    from ddpmkit.data.cache_build import sha256_file

    sha256_file(Path(file))  # warm it
    start = time.perf_counter()
    sha256_file(Path(file))
    hash_s = time.perf_counter() - start
    idx = np.random.default_rng(seed).integers(0, shape[0], (batches, batch))
    out = {"hash_gb_per_s": os.path.getsize(file) / hash_s / 1e9}
    for name in ("cold", "warm"):
        if name == "cold":
            evict(file)
        images = np.memmap(file, dtype=np.uint8, mode="r", shape=shape)
        start = time.perf_counter()
        for rows in idx:
            np.asarray(images[rows])
        out[f"gather_{name}_ms"] = 1000 * (time.perf_counter() - start) / batches
        del images
    return out


def evict(path: str) -> None:
    """Drop the file's pages from the page cache, so the next run reads it from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class Peaks(threading.Thread):
    """Poll /proc/PID/status for the peaks of RssAnon and RssFile (kB) until the process is gone."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, {"RssAnon": 0, "RssFile": 0}, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                text = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            for line in text.splitlines():
                key, _, value = line.partition(":")
                if key in self.peak:
                    self.peak[key] = max(self.peak[key], int(value.split()[0]))
            time.sleep(0.05)


def train(args, folder: Path, out: Path, flags: list[str]) -> dict:
    """One `ddpm train` child: peak RSS (wait4), peaks of RssAnon/RssFile, median time per step."""
    cmd = [sys.executable, "-m", "ddpmkit.cli", "train", "--data", str(folder), "--out", str(out), "--steps",
           str(args.steps), "--batch-size", str(args.batch_size), "--set", 'model.preset="tiny"', "--set",
           f"model.ch={args.ch}", "--set", "train.num_samples=2", "--set", "sample.steps=2", "--set",
           "train.log_every=20", "--sample-every", str(10**9), "--checkpoint-every", str(10**9), "--no-progress",
           *flags]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "DDPMKIT_CACHE": str(args.work / "cache")}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks = Peaks(proc.pid)
    peaks.start()
    _, status, usage = os.wait4(proc.pid, 0)
    peaks.done.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{err[-2000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [row["images_per_sec"] for row in rows[1:]] or [row["images_per_sec"] for row in rows]
    return {"wall_s": time.perf_counter() - start, "peak_rss_mb": usage.ru_maxrss / 1024,
            "peak_anon_mb": peaks.peak["RssAnon"] / 1024, "peak_file_mb": peaks.peak["RssFile"] / 1024,
            "step_ms": 1000 * args.batch_size / statistics.median(rates)}


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_all(args) -> dict:
    saved = args.work / "results.json"
    results = json.loads(saved.read_text()) if args.reuse and saved.exists() else run_training(args)
    big = results["build"][str(args.images)] if str(args.images) in results["build"] else results["build"][args.images]
    shape = (big["images"], args.size, args.size, 3)
    results["reads"] = {**measure_reads(big["file"], shape, args.batch_size), "load": load_average()}
    results["build"] = {int(k): v for k, v in results["build"].items()}
    return results


def run_training(args) -> dict:
    big, small = args.work / f"images_{args.images}", args.work / f"images_{args.small}"
    results = {"load_before": load_average(), "args": {k: str(v) for k, v in vars(args).items()}}
    results["generate_s"] = make_folder(big, args.images, args.size)
    link_subset(big, small, args.small)
    results["build"] = {n: build_cache(f, args.work / "cache", args.workers)
                        for n, f in ((args.images, big), (args.small, small))}
    runs = {}
    for n, folder in ((args.small, small), (args.images, big)):
        for name, flags in (("memory", ["--no-cache"]), ("cache", []), ("cache, no prefetch", ["--prefetch", "0"])):
            if name == "cache, no prefetch" and n != args.images:
                continue
            if name != "memory":
                evict(results["build"][n]["file"])
            out = args.work / "runs" / f"{n}-{name.replace(', ', '-').replace(' ', '_')}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            runs[f"{n} {name}"] = train(args, folder, out, flags)
            print(f"  {n:>7} images, {name:<19} {runs[f'{n} {name}']}", flush=True)
    results["runs"], results["load_after"] = runs, load_average()
    return results


def projection(results: dict, args) -> list[str]:
    """The paper's data sets on paper: cache size, build time at the measured rate per pixel, RSS per process."""
    big = results["build"][args.images]
    pixel_rate = big["images_per_s"] * args.size**2  # output pixels per second (decode + resize + write)
    hash_rate = results["reads"]["hash_gb_per_s"] * 1e9
    run_cache = results["runs"][f"{args.images} cache"]
    run_memory = results["runs"][f"{args.images} memory"]
    base = run_cache["peak_anon_mb"]  # the process without its data (flat in N: the cached runs)
    k = (run_memory["peak_anon_mb"] - base) / (big["bytes"] / 2**20)  # today's decode peaks at k x the data
    lines = []
    for name, (n, size) in PAPER.items():
        nbytes = n * size * size * 3
        lines.append(f"| {name} | {n:,} | {nbytes / 2**30:.1f} GiB | {n * size * size / pixel_rate / 60:.0f} min | "
                     f"{nbytes / hash_rate:.0f} s | {base:.0f} MB | {base + nbytes / 2**20:,.0f} MB | "
                     f"{base + k * nbytes / 2**20:,.0f} MB ({k:.1f}x the data) |")
    return lines


def report(results: dict, args) -> None:
    print(f"\nload average before {results['load_before']}, after {results['load_after']} (2 cores, shared)")
    if results["generate_s"]:
        print(f"generated {args.images} images in {results['generate_s']:.0f} s")
    for n, b in results["build"].items():
        print(f"first build, {n} images, {args.workers} workers: {b['build_s']:.1f} s = {b['images_per_s']:.0f} img/s;"
              f" {b['bytes'] / 2**20:.0f} MiB; open of the built cache (stat + SHA-256): {b['open_s']:.2f} s")
    r = results["reads"]
    print(f"SHA-256 of the images file (warm): {r['hash_gb_per_s']:.2f} GB/s; one batch of {args.batch_size} "
          f"gathered from the map: {r['gather_cold_ms']:.2f} ms cold, {r['gather_warm_ms']:.3f} ms warm "
          f"(load {r['load']})")
    print("\n| run | peak RSS MB (wait4) | peak RssAnon MB | peak RssFile MB | ms/step | wall s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results["runs"].items():
        print(f"| {name} | {r['peak_rss_mb']:.0f} | {r['peak_anon_mb']:.0f} | {r['peak_file_mb']:.0f} | "
              f"{r['step_ms']:.1f} | {r['wall_s']:.0f} |")
    print("\n| data set | images | cache size | first build (measured rate) | SHA-256 on open | RssAnon per process, "
          "cache | in memory, steady | in memory, peak while decoding |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(projection(results, args)))


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    args.work.mkdir(parents=True, exist_ok=True)
    results = run_all(args)
    (args.work / "results.json").write_text(json.dumps(results, indent=1))
    report(results, args)
    print(f"\nwrote {args.work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
