"""The golden-model demonstration behind ``make sim`` until the engine runs whole networks.

It runs the float reference and the int8 golden model on one image, prints the per-layer
quantization quality, compares the detections and writes annotated images and an SQNR plot.
"""

from __future__ import annotations

from pathlib import Path

from model.darknet import load_darknet
from model.image import draw_detections
from model.pipeline import (
    detection_agreement,
    infer_float,
    infer_int8,
    prepare_input,
    quantization_quality,
)
from model.quant import quantize_network

__all__ = ["DEMO_THRESH", "plot_sqnr", "run_golden_demo"]

#: The reference network has random weights, so its class probabilities are low; this is the
#: threshold darknet's reference detections were taken at.
DEMO_THRESH = 0.2


def plot_sqnr(rows, path: Path) -> None:
    """Bar chart of per-layer SQNR in dB, written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar([f"{r.index}\n{r.kind[:4]}" for r in rows], [r.sqnr_db for r in rows], color="#3b7dd8")
    ax.set_ylabel("SQNR int8 vs float (dB)")
    ax.set_title("Quantization quality per darknet layer")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_golden_demo(cfg: Path, weights: Path, image: Path, outdir: Path) -> int:
    """Run the demonstration; returns the process exit status (0)."""
    outdir.mkdir(parents=True, exist_ok=True)
    net = load_darknet(cfg, weights)
    x, image_size = prepare_input(image, net.input_shape)
    qnet = quantize_network(net, [x])
    float_run = infer_float(net, x, image_size, DEMO_THRESH)
    int_run = infer_int8(qnet, x, image_size, DEMO_THRESH)
    rows = quantization_quality(qnet, float_run, int_run)
    print(f"model {cfg.name} + {weights.name}, image {image.name} {image_size[0]}x{image_size[1]}")
    print(f"{'layer':>5}  {'kind':<14} {'output':<12} {'SQNR dB':>8}")
    for row in rows:
        print(f"{row.index:>5}  {row.kind:<14} {'x'.join(map(str, row.shape)):<12} "
              f"{row.sqnr_db:>8.1f}")
    matched, total = detection_agreement(float_run.detections, int_run.detections)
    classes = net.region.classes if net.region else 0
    names = [f"class{i}" for i in range(classes)]
    draw_detections(image, float_run.detections, names, outdir / "detections-float.png")
    draw_detections(image, int_run.detections, names, outdir / "detections-int8.png")
    plot_sqnr(rows, outdir / "sqnr.png")
    print(f"wrote {outdir}/detections-float.png, detections-int8.png, sqnr.png")
    print(f"golden: {len(rows)} layers, end-to-end SQNR {rows[-1].sqnr_db:.1f} dB, "
          f"{matched}/{total} float detections kept by int8 at thresh {DEMO_THRESH}")
    return 0
