"""Where bf16 pays: each preset's forward and forward + backward in fp32 and under CPU bf16 autocast, interleaved.

    python bench/bf16_nets.py                                    # digits@64, tiny@16, mnist28@16: ~2 CPU-minutes
    python bench/bf16_nets.py --nets cifar10:16,celebahq256:1

For each network: 4 rounds, each timing fp32 then bf16 (one untimed call, then the mean of two), on random
inputs; printed: the median seconds and fp32 / bf16 (above 1: bf16 is faster). The loss is the mean square of
the output in fp32, as the trainer's L_simple. What `precision = "auto"` does with this: docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from ddpmkit.models import UNet


def timings(net, x, t, step, rounds: int) -> dict:
    out = {False: [], True: []}
    for _ in range(rounds):
        for bf16 in (False, True):
            step(net, x, t, bf16)
            t0 = time.perf_counter()
            step(net, x, t, bf16)
            step(net, x, t, bf16)
            out[bf16].append((time.perf_counter() - t0) / 2)
    return {k: statistics.median(v) for k, v in out.items()}


def train(net, x, t, bf16: bool) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = net(x, t).float().pow(2).mean()
    loss.backward()


def forward(net, x, t, bf16: bool) -> None:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        net(x, t)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nets", default="digits:64,tiny:16,mnist28:16", help="preset:batch, comma separated")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s); load average {os.getloadavg()[0]:.2f}", flush=True)
    for item in args.nets.split(","):
        name, batch = item.split(":")
        torch.manual_seed(0)
        net = UNet.from_preset(name)
        c, b = net.config, int(batch)
        x = torch.randn(b, c["in_channels"], c["image_size"], c["image_size"])
        t = torch.randint(0, 1000, (b,))
        for step in (train, forward):
            m = timings(net, x, t, step, args.rounds)
            print(f"{name} batch {b} {step.__name__:<8} fp32 {m[False]:.4f} s, bf16 {m[True]:.4f} s, "
                  f"fp32/bf16 {m[False] / m[True]:.2f} (load {os.getloadavg()[0]:.1f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
