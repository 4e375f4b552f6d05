"""Benchmark of the integer golden model on full-size tiny-YOLOv2-VOC (416×416).

Run with ``owlet bench`` (or ``make bench``). The network has darknet's yolov2-tiny-voc layer list
and seeded random weights (the speed does not depend on the values); it is calibrated on the
built-in image and then timed end to end: input quantization, every integer layer and the host's
region layer.
"""

from __future__ import annotations

import time

import numpy as np

from model.darknet import parse_cfg
from model.float_ref import forward
from model.golden import forward_int, quantize_input
from model.pipeline import prepare_input
from model.quant import quantize_network
from model.zoo import DOG_IMAGE, TINY_YOLO_VOC_CFG, random_weights

__all__ = ["DARKNET_CPU_MS", "run_golden_bench"]

#: darknet's single-threaded CPU forward pass of yolov2-tiny-voc on these 2-core machines, in ms:
#: the figure the golden-model issue states (the goal is at most half of it). Measured here on
#: 2026-11-21, pjreddie darknet f6afaab built with its Makefile defaults (CPU, -Ofast, no OpenMP),
#: ``detector test`` on dog.png: 776-873 ms, so 700 is the stricter yardstick.
DARKNET_CPU_MS = 700.0


def _ms_per_frame(run, repeat: int) -> float:
    run()  # warm-up: first-touch allocations and BLAS thread start-up
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def run_golden_bench(repeat: int = 5) -> int:
    """Print ms/frame of the float reference and the int8 golden model, and the ratio to darknet.

    Returns
    -------
    int
        0 (the process exit status); the numbers are printed, not asserted.
    """
    net = random_weights(parse_cfg(TINY_YOLO_VOC_CFG), seed=0)
    x, _ = prepare_input(DOG_IMAGE, net.input_shape)
    qnet = quantize_network(net, [x])
    macs = sum(
        int(np.prod(layer.out_shape)) * layer.in_shape[0] * layer.size**2
        for layer in net.layers if layer.kind == "convolutional"
    )
    float_ms = _ms_per_frame(lambda: forward(net, x), repeat)
    int_ms = _ms_per_frame(lambda: forward_int(qnet, quantize_input(x)), repeat)
    print(f"tiny-YOLOv2-VOC 416x416: {macs / 1e9:.2f} GMAC per frame, best of {repeat}")
    print(f"float reference ms/frame: {float_ms:.1f}")
    print(f"int8 golden     ms/frame: {int_ms:.1f}  ({macs / int_ms / 1e6:.1f} GMAC/s)")
    print(f"int8 golden / darknet CPU ({DARKNET_CPU_MS:.0f} ms): {int_ms / DARKNET_CPU_MS:.3f} "
          f"(goal <= 0.5)")
    return 0
