"""Draw the CSAM U-Net architecture figure of docs/networks.md.

    python docs/scripts/networks_figure.py     # -> docs/figures/csam_unet_architecture.png

Top panel: the ``csam_unet`` registry network (residual U-Net, CSAM on the skips) with its
stage widths and spatial sizes for a 512 x 512 input, and an inset of one residual block.
Bottom panel: the CSAM module (channel attention, then spatial attention). The widths,
kernel sizes, reduction ratio and spatial-attention kernel are read from a network built by
:func:`kneeseg.networks.build_network`, so the drawing follows the code's defaults.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from kneeseg.networks import CSAMUNet, build_network  # noqa: E402
from kneeseg.networks.attention import AttentionConcat  # noqa: E402

OUT = REPO / "docs" / "figures" / "csam_unet_architecture.png"
INPUT_SIZE = 512

ENC = "#cfe2f3"  # encoder blocks
DEC = "#d9ead3"  # decoder blocks
BOT = "#b4a7d6"  # bottleneck
ATT = "#f9cb9c"  # CSAM
HEAD = "#ead1dc"
POOL = "#c0392b"  # max-pool arrows
UP = "#27883d"  # transposed-conv arrows
SKIP = "#7f7f7f"
EDGE = "#333333"
GREY = "#444444"  # secondary labels


def box(ax, x: float, y: float, w: float, h: float, text: str, fc: str, fontsize: float = 9, **kw) -> None:
    """A rounded box centred on ``(x, y)``."""
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.6",
            fc=fc, ec=kw.pop("ec", EDGE), lw=kw.pop("lw", 1.0), zorder=3,
        )
    )  # fmt: skip
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, zorder=4, **kw)


def arrow(ax, p0: tuple[float, float], p1: tuple[float, float], color: str = EDGE, lw: float = 1.4, **kw) -> None:
    ax.add_patch(
        FancyArrowPatch(
            p0, p1, arrowstyle=kw.pop("arrowstyle", "-|>"), mutation_scale=11, color=color, lw=lw, zorder=2, **kw
        )
    )


def circle(ax, x: float, y: float, text: str, r: float = 1.3, fc: str = "white", fontsize: float = 10) -> None:
    ax.add_patch(plt.Circle((x, y), r, fc=fc, ec=EDGE, lw=1.0, zorder=3))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, zorder=4)


def read_config(net: CSAMUNet) -> dict:
    """Stage widths, kernel sizes and CSAM settings of a built :class:`CSAMUNet`."""
    channels = [stage.convs[0].conv.out_channels if i == 0 else stage[1].convs[0].conv.out_channels
                for i, stage in enumerate(net.encoder)]  # fmt: skip
    enc_block = net.encoder[0]
    dec_block = net.decoder[0].block
    merge = net.decoder[0].merge
    assert isinstance(merge, AttentionConcat), "the figure draws CSAM on the skips"
    csam = merge.attention
    return {
        "channels": channels,
        "enc_k": enc_block.convs[0].conv.kernel_size[0],
        "dec_k": dec_block.convs[0].conv.kernel_size[0],
        "num_convs": len(enc_block.convs),
        "hidden0": csam.channel.mlp[0].out_features,
        "c0": csam.channel.mlp[0].in_features,
        "spatial_k": csam.spatial.conv.kernel_size[0],
    }


def architecture_panel(ax, cfg: dict) -> None:
    ch = cfg["channels"]
    n = len(ch)
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 68)
    ax.axis("off")
    ax.set_title("CSAMUNet (registry name csam_unet), 2D, 1 input channel, 2 classes", fontsize=12, loc="left")

    bw, bh = 8.4, 5.4
    ys = [59 - 11 * i for i in range(n)]  # level i centre height
    xb = 48.0  # bottleneck centre; the U is symmetric about it
    xe = [xb - 9.5 * (n - 1 - i) for i in range(n)]  # encoder centres; the last one is the bottleneck
    xd = [2 * xb - x for x in xe[:-1]]  # decoder centres (mirror image)
    k = cfg["enc_k"]
    dk = cfg["dec_k"]

    # input and head
    ax.text(xe[0], 66.6, f"input 1 x {INPUT_SIZE} x {INPUT_SIZE}", ha="center", va="top", fontsize=8.5)
    arrow(ax, (xe[0], 64.6), (xe[0], ys[0] + bh / 2))
    hx = xd[0] + 9.8
    box(ax, hx, ys[0], 6.0, bh, "1x1\nconv", HEAD, fontsize=8.5)
    arrow(ax, (xd[0] + bw / 2, ys[0]), (hx - 3.0, ys[0]))
    ax.text(hx, ys[0] - bh / 2 - 1.0, "2 logits\n(no softmax)", ha="center", va="top", fontsize=8)

    for i in range(n):
        size = INPUT_SIZE // 2**i
        if i < n - 1:
            box(ax, xe[i], ys[i], bw, bh, f"{ch[i]}", ENC, fontsize=11, weight="bold")
            ax.text(xe[i] - bw / 2 - 0.8, ys[i] - 1.2, f"{size}x{size}", ha="right", va="center", fontsize=8, color=GREY)
        else:
            box(ax, xb, ys[i], bw + 2, bh, f"{ch[i]}\nbottleneck", BOT, fontsize=9.5, weight="bold")
            ax.text(xb, ys[i] - bh / 2 - 0.8, f"{size}x{size}", ha="center", va="top", fontsize=8, color=GREY)
    for i in range(n - 1):
        # max-pool down, encoder i -> i+1
        x1 = xe[i + 1] - (bw + 2) / 2 + 1.0 if i + 1 == n - 1 else xe[i + 1] - 1.5
        arrow(ax, (xe[i] + 1.5, ys[i] - bh / 2), (x1, ys[i + 1] + bh / 2), color=POOL, lw=2.0)
        # decoder block
        box(ax, xd[i], ys[i], bw, bh, f"{ch[i]}", DEC, fontsize=11, weight="bold")
        ax.text(xd[i] + bw / 2, ys[i] - bh / 2 - 0.4, f"in {2 * ch[i]}", ha="right", va="top", fontsize=7.5, color=GREY)
        # transposed conv up, level i+1 -> decoder i
        x0 = xb + (bw + 2) / 2 - 1.0 if i + 1 == n - 1 else xd[i + 1] + 1.5
        arrow(ax, (x0, ys[i + 1] + bh / 2), (xd[i] - 1.5, ys[i] - bh / 2), color=UP, lw=2.0)
        # skip with CSAM, then concatenation
        xc = xd[i] - bw / 2  # the concatenation sits on the decoder block's input edge
        arrow(ax, (xe[i] + bw / 2, ys[i]), (xb - 3.2, ys[i]), color=SKIP, lw=1.3, arrowstyle="-")
        box(ax, xb, ys[i], 6.4, 3.2, "CSAM", ATT, fontsize=8.5, weight="bold")
        arrow(ax, (xb + 3.2, ys[i]), (xc - 1.0, ys[i]), color=SKIP, lw=1.3)
        circle(ax, xc, ys[i], "C", r=1.0, fontsize=8)

    # residual-block inset, tied to encoder stage 1
    ix0, iy0, iw, ih = 1.0, 0.6, 35.0, 15.0
    ax.add_patch(Rectangle((ix0, iy0), iw, ih, fc="#fbfbfb", ec="#666666", lw=0.9, ls="--", zorder=1))
    ax.plot([xe[1] - bw / 2, ix0 + 4], [ys[1] - bh / 2, iy0 + ih], ls=":", color="#666666", lw=0.9, zorder=1)
    title = f"residual block (every box above; here {ch[0]} -> {ch[1]})"
    ax.text(ix0 + 0.8, iy0 + ih - 0.9, title, fontsize=8, va="top", weight="bold")
    yb = iy0 + 6.6
    ax.text(ix0 + 1.7, yb, "x", ha="center", va="center", fontsize=10, style="italic")
    box(ax, ix0 + 8.5, yb, 9.5, 3.6, f"conv {k}x{k}\nBN, ReLU", ENC, fontsize=7.5)
    box(ax, ix0 + 20.0, yb, 9.0, 3.6, f"conv {k}x{k}\nBN", ENC, fontsize=7.5)
    circle(ax, ix0 + 27.5, yb, "+", r=1.1, fontsize=10)
    ax.text(ix0 + 32.3, yb, "ReLU", ha="center", va="center", fontsize=8)
    arrow(ax, (ix0 + 2.6, yb), (ix0 + 3.75, yb))
    arrow(ax, (ix0 + 13.25, yb), (ix0 + 15.5, yb))
    arrow(ax, (ix0 + 24.5, yb), (ix0 + 26.4, yb))
    arrow(ax, (ix0 + 28.6, yb), (ix0 + 30.3, yb))
    # shortcut underneath: 1x1 projection because the width changes
    ys_ = iy0 + 2.0
    ax.plot([ix0 + 2.6, ix0 + 2.6, ix0 + 11.0], [yb - 0.4, ys_, ys_], color=EDGE, lw=1.2, zorder=2)
    box(ax, ix0 + 14.5, ys_, 7.0, 2.4, "conv 1x1", "white", fontsize=7.5)
    ax.plot([ix0 + 18.0, ix0 + 27.5], [ys_, ys_], color=EDGE, lw=1.2, zorder=2)
    arrow(ax, (ix0 + 27.5, ys_), (ix0 + 27.5, yb - 1.1))
    ax.text(ix0 + 22.8, ys_ + 0.5, "shortcut", fontsize=7, ha="center", va="bottom", style="italic")
    ax.text(ix0 + 0.8, iy0 + ih - 3.0,
            f"{cfg['num_convs']} convs per block; identity shortcut if the width is unchanged",
            fontsize=7, va="top", color=GREY)  # fmt: skip

    # legend, bottom right
    lx, ly = 62.0, 13.2
    items = [
        (POOL, "-|>", "2x2 max-pool, stride 2"),
        (UP, "-|>", "2x2 transposed conv, stride 2"),
        (SKIP, "-|>", "skip connection"),
    ]
    for j, (color, style, label) in enumerate(items):
        yy = ly - 2.5 * j
        arrow(ax, (lx, yy), (lx + 5, yy), color=color, lw=2.0 if color != SKIP else 1.3, arrowstyle=style)
        ax.text(lx + 6.2, yy, label, va="center", fontsize=8.5)
    yy = ly - 2.5 * len(items)
    circle(ax, lx + 2.5, yy, "C", r=1.0, fontsize=8)
    ax.text(lx + 6.2, yy, "concatenate [CSAM(skip), up]", va="center", fontsize=8.5)
    yy -= 2.6
    ax.add_patch(Rectangle((lx + 0.5, yy - 0.9), 4.0, 1.8, fc=ENC, ec=EDGE, lw=0.8))
    ax.text(lx + 6.2, yy, f"residual block; encoder {k}x{k}, decoder {dk}x{dk}", va="center", fontsize=8.5)


def csam_panel(ax, cfg: dict) -> None:
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 24)
    ax.axis("off")
    r = cfg["c0"] // cfg["hidden0"]
    sk = cfg["spatial_k"]
    title = f"CSAM module (channel attention, then spatial attention; r = {r}, {sk}x{sk} conv)"
    ax.set_title(title, fontsize=12, loc="left")

    # shaded regions
    ax.add_patch(Rectangle((6.5, 0.8), 46.0, 21.0, fc="#fdf2e9", ec="none", zorder=0))
    ax.add_patch(Rectangle((54.5, 0.8), 45.0, 21.0, fc="#eef5fb", ec="none", zorder=0))
    ax.text(7.3, 21.0, "channel attention", fontsize=9, va="top", weight="bold", color="#a0522d")
    ax.text(55.3, 21.0, "spatial attention", fontsize=9, va="top", weight="bold", color="#2f5f8a")

    y = 10.0
    ax.text(2.6, y, "F\nC x H x W", ha="center", va="center", fontsize=8.5)
    # channel branch
    box(ax, 12.5, y + 4.0, 7.5, 3.0, "avg pool", ATT, fontsize=8)
    box(ax, 12.5, y - 4.0, 7.5, 3.0, "max pool", ATT, fontsize=8)
    arrow(ax, (5.3, y + 0.6), (8.7, y + 3.6))
    arrow(ax, (5.3, y - 0.6), (8.7, y - 3.6))
    box(ax, 24.0, y, 9.0, 8.0, f"shared MLP\nC -> C/{r} -> C\n(ReLU)", "white", fontsize=7.5)
    arrow(ax, (16.3, y + 4.0), (19.5, y + 1.8))
    arrow(ax, (16.3, y - 4.0), (19.5, y - 1.8))
    ax.text(18.0, y + 5.6, "C x 1 x 1", fontsize=7, ha="center", color=GREY)
    circle(ax, 32.0, y, "+", r=1.1)
    arrow(ax, (28.5, y + 1.0), (30.9, y + 0.3))
    arrow(ax, (28.5, y - 1.0), (30.9, y - 0.3))
    box(ax, 37.0, y, 4.2, 2.8, "σ", "white", fontsize=11)
    arrow(ax, (33.1, y), (34.9, y))
    circle(ax, 43.5, y, "×", r=1.1, fc="#fff2cc")
    arrow(ax, (39.1, y), (42.4, y))
    # bypass of F to the first product
    ax.plot([2.6, 2.6, 43.5], [y + 2.2, 19.0, 19.0], color=EDGE, lw=1.1, zorder=2)
    arrow(ax, (43.5, 19.0), (43.5, y + 1.1))
    ax.text(47.0, y - 2.3, "F'", ha="center", va="center", fontsize=10, style="italic")
    ax.plot([44.6, 55.2], [y, y], color=EDGE, lw=1.4, zorder=2)

    # spatial branch
    box(ax, 61.5, y + 4.0, 8.2, 3.0, "mean over C", ATT, fontsize=8)
    box(ax, 61.5, y - 4.0, 8.2, 3.0, "max over C", ATT, fontsize=8)
    ax.plot([55.2, 55.2], [y - 4.0, y + 4.0], color=EDGE, lw=1.4, zorder=2)
    arrow(ax, (55.2, y + 4.0), (57.4, y + 4.0))
    arrow(ax, (55.2, y - 4.0), (57.4, y - 4.0))
    box(ax, 72.5, y, 6.5, 4.2, "concat\n2 x H x W", "white", fontsize=7.5)
    arrow(ax, (65.6, y + 4.0), (69.3, y + 1.5))
    arrow(ax, (65.6, y - 4.0), (69.3, y - 1.5))
    box(ax, 81.0, y, 6.0, 4.2, f"conv\n{sk}x{sk}", "white", fontsize=8)
    arrow(ax, (75.75, y), (78.0, y))
    box(ax, 87.5, y, 3.6, 2.8, "σ", "white", fontsize=11)
    arrow(ax, (84.0, y), (85.7, y))
    circle(ax, 93.0, y, "×", r=1.1, fc="#fff2cc")
    arrow(ax, (89.3, y), (91.9, y))
    ax.plot([50.5, 50.5, 93.0], [y, 19.0, 19.0], color=EDGE, lw=1.1, zorder=2)
    arrow(ax, (93.0, 19.0), (93.0, y + 1.1))
    ax.text(87.5, y - 2.6, "1 x H x W", fontsize=7, ha="center", va="top", color=GREY)
    ax.text(37.0, y - 2.6, "C x 1 x 1", fontsize=7, ha="center", va="top", color=GREY)
    arrow(ax, (94.1, y), (97.2, y))
    ax.text(97.6, y - 2.4, "out\nC x H x W", ha="center", va="top", fontsize=8)


def main() -> int:
    net = build_network("csam_unet")
    cfg = read_config(net)
    del net
    fig = plt.figure(figsize=(10.67, 9.6))
    ax1 = fig.add_axes((0.01, 0.30, 0.98, 0.665))
    ax2 = fig.add_axes((0.01, 0.01, 0.98, 0.25))
    architecture_panel(ax1, cfg)
    csam_panel(ax2, cfg)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=150, facecolor="white")
    plt.close(fig)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
