"""PNG previews: a few slices of a volume with its segmentation overlaid."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kneeseg.atomic import atomic_write_bytes
from kneeseg.data.orientation import display_plane
from kneeseg.files import PathLike

__all__ = ["draw_overlay", "pick_slices", "save_overlay_png"]

_COLOURS = [(0.0, 0.0, 0.0), (1.0, 0.25, 0.2), (0.2, 0.8, 1.0), (1.0, 0.85, 0.1), (0.4, 1.0, 0.3), (0.9, 0.3, 1.0)]


def pick_slices(label: np.ndarray | None, depth: int, count: int = 4) -> list:
    """Slice indices to show: the ``count`` slices with the most foreground (in slice order), else
    slices spread over the middle of the volume."""
    if label is not None and label.ndim == 3 and label.any():
        per_slice = (label.reshape(-1, label.shape[-1]) > 0).sum(axis=0)
        order = np.argsort(-per_slice, kind="stable")
        chosen = [int(k) for k in order[:count] if per_slice[k] > 0]
        return sorted(chosen)
    chosen = np.linspace(depth * 0.2, depth * 0.8, num=min(count, depth)).round().astype(int)
    return sorted(set(int(c) for c in chosen))


def draw_overlay(
    ax: Any,
    image: np.ndarray,
    label: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    *,
    image_range: tuple[float | None, float | None] = (None, None),
    label_cmap: Any = "autumn",
    label_range: tuple[float | None, float | None] = (None, None),
    alpha: float = 0.5,
    reference_colour: str = "cyan",
) -> None:
    """Draw one 2D overlay on the matplotlib axes ``ax``: ``image`` in grey, the non-zero pixels of
    ``label`` filled over it and the outline of ``reference``'s non-zero pixels (when it has any).

    Args:
        image, label, reference: 2D arrays of one shape, as ``imshow`` shows them (rows down).
        image_range: grey ``(vmin, vmax)``; None: the image's own range.
        label_cmap: colour map of the label's values; ``label_range`` its ``(vmin, vmax)``.
        alpha: opacity of the label fill.
        reference_colour: colour of the reference's contour.
    """
    # matplotlib layers (not monai.visualize.blend_images / skimage.color.label2rgb): those blend
    # into one RGB array at the data's resolution before matplotlib resamples it to the axes, so
    # the PNGs would not stay the same bytes
    ax.imshow(image, cmap="gray", vmin=image_range[0], vmax=image_range[1])
    if label is not None:
        ax.imshow(np.ma.masked_where(label == 0, label), cmap=label_cmap, vmin=label_range[0], vmax=label_range[1],
                  alpha=alpha, interpolation="nearest")  # fmt: skip
    if reference is not None and reference.any():
        ax.contour(reference > 0, levels=[0.5], colors=[reference_colour], linewidths=0.8)


def save_overlay_png(
    image: np.ndarray,
    label: np.ndarray | None,
    out_path: PathLike,
    slices: Sequence[int] | None = None,
    count: int = 4,
    title: str | None = None,
    class_names: dict[int, str] | None = None,
    reference: np.ndarray | None = None,
    affine: np.ndarray | None = None,
    subtitle: str | None = None,
) -> Path:
    """Write a PNG with ``count`` slices of ``image`` and ``label`` overlaid (atomic write).

    Args:
        image: ``(columns, rows, slices)`` or ``(columns, rows)`` intensities.
        label: class ids of the same shape (or ``None``).
        out_path: PNG path.
        slices: slice indices (default: :py:func:`pick_slices`).
        title: figure title.
        class_names: ``{class id: name}`` for the legend.
        reference: optional ground-truth class ids, drawn as contours.
        affine: the volume's voxel -> RAS affine: slices are then shown in their plane's standard
            display (a sagittal knee with anterior left, superior up, whatever the storage order);
            without it, in stored DICOM order.
        subtitle: a second title line (e.g. the quality-check verdict).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    img = np.asarray(image, dtype=np.float32)
    lab = None if label is None else np.asarray(label).astype(np.int32)
    if img.ndim == 2:
        img = img[..., None]
        lab = None if lab is None else lab[..., None]
        reference = None if reference is None else np.asarray(reference)[..., None]
    ks = list(slices) if slices is not None else pick_slices(lab if lab is not None else reference, img.shape[-1], count)
    lo, hi = np.percentile(img, [0.5, 99.5])
    n_classes = max(int(lab.max()) if lab is not None and lab.size else 1, 1)
    cmap = ListedColormap([_COLOURS[i % len(_COLOURS)] for i in range(n_classes + 1)])
    fig, axes = plt.subplots(1, len(ks), figsize=(3.2 * len(ks), 3.6), dpi=100, squeeze=False)
    for ax, k in zip(axes[0], ks):
        seg = None if lab is None else display_plane(lab, k, affine).astype(float)
        ref = None if reference is None else display_plane(np.asarray(reference), k, affine)
        draw_overlay(ax, display_plane(img, k, affine), seg, ref, image_range=(lo, hi if hi > lo else lo + 1),
                     label_cmap=cmap, label_range=(0, n_classes), alpha=0.45, reference_colour="white")  # fmt: skip
        count_k = int((lab[..., k] > 0).sum()) if lab is not None else 0
        ax.set_title(f"slice {k}" + (f" ({count_k} px)" if lab is not None else ""), fontsize=9)
        ax.axis("off")
    if class_names and lab is not None:
        handles = [Patch(color=_COLOURS[c % len(_COLOURS)], label=n) for c, n in sorted(class_names.items()) if c > 0]
        if reference is not None:
            handles.append(Patch(facecolor="none", edgecolor="black", label="reference (contour)"))
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    if title or subtitle:
        text = "\n".join(t for t in (title, subtitle) if t)
        fig.suptitle(text, fontsize=9 if subtitle else 10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96 if subtitle else 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(out_path, buf.getvalue())
