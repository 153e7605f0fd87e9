"""Speed of every registry network: forward and forward+backward, fp32 and bf16 + channels_last.

Each time is the median over ``--repeats`` runs after warm-up; the networks are timed
round-robin (one run of each, then the next round) so that slow drifts of the machine hit
every network alike. The table gives each time as a ratio to ``res_unet`` of the same
width measured in the same run, which is the number to compare across machines.

    python benchmarks/networks.py                         # everything (about 20-30 min on 2 cores)
    python benchmarks/networks.py --networks res_unet csam_unet unet --sizes 512 \
        --passes forward --modes fp32 --repeats 7          # the attention-overhead check
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from kneeseg.networks import build_network, list_networks

REFERENCE = "res_unet"


def _prepare(name: str, mode: str, train: bool, width: int | None) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_network(name) if width is None else build_network(name, width=width)
    net.train(train)
    if mode == "bf16":
        net = net.to(memory_format=torch.channels_last)
    return net


def _autocast(mode: str):
    if mode == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _run_once(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str, train: bool) -> float:
    start = time.perf_counter()
    if train:
        net.zero_grad(set_to_none=True)
        with _autocast(mode):
            out = net(x)
        loss = torch.nn.functional.cross_entropy(out.float(), y)
        loss.backward()
    else:
        with torch.inference_mode(), _autocast(mode):
            net(x)
    return time.perf_counter() - start


def benchmark(
    networks: list[str], sizes: list[int], modes: list[str], passes: list[str], repeats: int, warmup: int, batch: int,
    width: int | None,
) -> list[dict[str, object]]:
    """Time every (size, mode, pass, network); returns one row per combination."""
    rows: list[dict[str, object]] = []
    for size in sizes:
        for mode in modes:
            for pass_ in passes:
                train = pass_ == "train"
                x = torch.randn(batch, 1, size, size)
                if mode == "bf16":
                    x = x.to(memory_format=torch.channels_last)
                y = torch.randint(0, 2, (batch, size, size))
                times: dict[str, list[float]] = {n: [] for n in networks}
                nets = {n: _prepare(n, mode, train, width) for n in networks}
                for n, net in nets.items():
                    for _ in range(warmup):
                        _run_once(net, x, y, mode, train)
                for r in range(repeats):
                    for n, net in nets.items():
                        times[n].append(_run_once(net, x, y, mode, train))
                        gc.collect()
                    print(f"  {size}px {mode:4s} {pass_:7s} round {r + 1}/{repeats}", file=sys.stderr, flush=True)
                del nets
                gc.collect()
                ref = statistics.median(times[REFERENCE]) if REFERENCE in times else float("nan")
                for n in networks:
                    med = statistics.median(times[n])
                    rows.append(
                        {"network": n, "size": size, "mode": mode, "pass": pass_, "seconds": med, "ratio_to_res_unet": med / ref}
                    )
                    print(f"{size}px {mode:4s} {pass_:7s} {n:22s} {med:8.3f} s  x{med / ref:5.2f}", flush=True)
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    """One table: a row per network, a column pair (seconds, ratio) per (size, mode, pass)."""
    combos = sorted({(r["size"], r["mode"], r["pass"]) for r in rows}, key=lambda c: (c[0], c[2] != "forward", c[1]))
    nets = list(dict.fromkeys(r["network"] for r in rows))
    by = {(r["network"], r["size"], r["mode"], r["pass"]): r for r in rows}
    head = "| network | " + " | ".join(f"{s}px {m} {p}" for s, m, p in combos) + " |"
    sep = "|---|" + "---:|" * len(combos)
    lines = [head, sep]
    for n in nets:
        cells = []
        for s, m, p in combos:
            r = by.get((n, s, m, p))
            cells.append("" if r is None else f"{r['seconds']:.3f} s (x{r['ratio_to_res_unet']:.2f})")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", nargs="+", default=list_networks())
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--modes", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    parser.add_argument("--passes", nargs="+", choices=["forward", "train"], default=["forward", "train"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--width", type=int, default=None, help="override every network's width (default: each one's own)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    networks = list(dict.fromkeys(([REFERENCE] if REFERENCE not in args.networks else []) + args.networks))
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"batch {args.batch}, median of {args.repeats}",
        flush=True,
    )
    rows = benchmark(networks, args.sizes, args.modes, args.passes, args.repeats, args.warmup, args.batch, args.width)
    print()
    print(markdown(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
