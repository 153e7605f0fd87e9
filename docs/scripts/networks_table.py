"""Parameter count and forward GFLOPs of every registry network, as a Markdown table.

    python docs/scripts/networks_table.py               # -> docs/tables/networks_params_flops.md
    python docs/scripts/networks_table.py --size 256    # another input size (printed only)

Every network is built with its registry defaults (2D, 1 input channel, 2 classes, default
width), put in eval mode and run once under ``torch.no_grad()`` on a ``1 x 1 x size x size``
input inside :class:`torch.utils.flop_counter.FlopCounterMode`. That counter counts a
multiply-add as 2 FLOPs and only sees matmul- and convolution-type operators (``mm``,
``addmm``, ``bmm``, convolution, transposed convolution, attention kernels); element-wise
work (normalisation, activations, pooling, the attention gates' sigmoid and products) is
not included. One network is built, measured and freed at a time: the full-width networks
need a few GB each for a 512 x 512 fp32 forward.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from kneeseg.networks import build_network, list_networks, network_spec  # noqa: E402

DEFAULT_OUT = REPO / "docs" / "tables" / "networks_params_flops.md"


def measure(name: str, size: int) -> tuple[int, int]:
    """``(parameters, forward FLOPs)`` of registry network ``name`` at ``1 x 1 x size x size``."""
    torch.manual_seed(0)
    net = build_network(name)
    net.eval()
    params = sum(p.numel() for p in net.parameters())
    x = torch.zeros(1, 1, size, size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        y = net(x)
    if tuple(y.shape) != (1, 2, size, size):
        raise RuntimeError(f"{name}: expected logits of shape (1, 2, {size}, {size}), got {tuple(y.shape)}")
    flops = counter.get_total_flops()
    del net, x, y, counter
    gc.collect()
    return params, flops


def markdown_table(rows: list[tuple[str, str, int, int]], size: int) -> str:
    lines = [
        f"| network | description | parameters (M) | GFLOPs at 1x1x{size}x{size} |",
        "|---|---|---:|---:|",
    ]
    for name, description, params, flops in rows:
        lines.append(f"| `{name}` | {description} | {params / 1e6:.2f} | {flops / 1e9:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="input height and width (default 512)")
    parser.add_argument(
        "--out", type=Path, default=None,
        help=f"Markdown file to write (default {DEFAULT_OUT.relative_to(REPO)} for --size 512, none otherwise)",
    )  # fmt: skip
    parser.add_argument("--networks", nargs="+", default=None, help="subset of the registry (default: all)")
    args = parser.parse_args(argv)

    names = args.networks or list_networks()
    out = args.out if args.out is not None else (DEFAULT_OUT if args.size == 512 and args.networks is None else None)
    rows: list[tuple[str, str, int, int]] = []
    for i, name in enumerate(names, 1):
        start = time.perf_counter()
        params, flops = measure(name, args.size)
        rows.append((name, network_spec(name).description, params, flops))
        print(
            f"[{i}/{len(names)}] {name}: {params / 1e6:.2f} M parameters, {flops / 1e9:.1f} GFLOPs "
            f"({time.perf_counter() - start:.1f} s)",
            flush=True,
        )

    table = markdown_table(rows, args.size)
    print()
    print(table, end="")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table)
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
