"""owlet: a bit-exact co-design flow from a quantized tiny-YOLO detector to an FPGA bitstream."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["detection_lines", "detections_doc", "main"]


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    from model.zoo import DEFAULT_CFG, DEFAULT_WEIGHTS, MODELS

    parser.add_argument("--model", choices=MODELS,
                        help="a network of the zoo by name; sets --cfg, --weights and the class "
                             "names (yolov3-tiny needs `make weights`)")
    parser.add_argument("--cfg", type=Path, default=DEFAULT_CFG,
                        help="darknet .cfg (default: the built-in %(default)s)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS,
                        help="darknet .weights (default: the built-in %(default)s)")


def _select_model(args):
    """Apply ``--model``: the zoo entry's cfg, weights and names replace the defaults.

    Returns the entry (None without ``--model``); a missing file says to run ``make weights``.
    """
    if getattr(args, "model", None) is None:
        return None
    from model.zoo import find_model

    zoo = find_model(args.model)
    args.cfg, args.weights = zoo.cfg, zoo.weights
    if getattr(args, "names", None) is None:
        args.names = zoo.names
    return zoo


def _add_calibration_arguments(parser: argparse.ArgumentParser) -> None:
    from model.quant import CALIBRATION_METHODS

    parser.add_argument("--calib", type=Path, nargs="+", metavar="IMAGE",
                        help="images to calibrate activation scales on (default: the input image)")
    parser.add_argument("--calib-method", choices=CALIBRATION_METHODS, default="max",
                        help="activation range estimator (default: %(default)s)")


def _load_network(args):
    from model.darknet import load_darknet

    _select_model(args)
    return load_darknet(args.cfg, args.weights)


def _calibrate(net, images, method, quiet=False):
    from tqdm import tqdm

    from model.pipeline import prepare_input
    from model.quant import quantize_network

    inputs = [prepare_input(path, net.input_shape)[0]
              for path in tqdm(images, desc="calibration images", disable=quiet or len(images) < 4,
                               unit="img")]
    return quantize_network(net, inputs, method)


def _load_quantized(path: Path, net, cfg: Path):
    from model.quant import QuantizedNetwork

    qnet = QuantizedNetwork.load(path)
    qnet.check_matches(net, path, cfg)
    return qnet


def _time_forward(run, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        run()
    return (time.perf_counter() - start) / repeat * 1e3


def detection_lines(detections, names) -> list[str]:
    """One line per detected class of each box, as ``owlet infer`` (and ``owlet run``) print."""
    return [f"{names[c]}: {det.probs[c] * 100:.0f}%  box x={det.x:.3f} y={det.y:.3f} "
            f"w={det.w:.3f} h={det.h:.3f}"
            for det in detections for c in np.flatnonzero(det.probs > 0)]


def detections_doc(image_size, detections) -> dict:
    """The JSON document of ``owlet infer --json`` (and ``owlet run --json``)."""
    return {
        "image": list(image_size),
        "detections": [
            {"box": [float(d.x), float(d.y), float(d.w), float(d.h)],
             "objectness": float(d.objectness), "probs": [float(p) for p in d.probs]}
            for d in detections if np.any(d.probs > 0)
        ],
    }


def cmd_infer(args) -> int:
    from model.image import draw_detections
    from model.pipeline import class_names, infer_float, infer_int8, prepare_input

    net = _load_network(args)
    x, image_size = prepare_input(args.image, net.input_shape)
    if args.mode == "float":
        def run():
            return infer_float(net, x, image_size, args.thresh, args.nms)
    else:
        if args.qmodel is not None:
            qnet = _load_quantized(args.qmodel, net, args.cfg)
        else:
            if args.calib is None:
                print(f"owlet: no --calib given: calibrating activation scales on {args.image}")
            qnet = _calibrate(net, args.calib or [args.image], args.calib_method)

        def run():
            return infer_int8(qnet, x, image_size, args.thresh, args.nms)
    result = run()
    if args.repeat:
        print(f"ms/frame: {_time_forward(run, args.repeat):.1f}")
    classes = net.heads[-1][1].classes if net.heads else 0
    names = class_names(classes, args.cfg, args.names)
    for line in detection_lines(result.detections, names):
        print(line)
    if args.dump:
        args.dump.mkdir(parents=True, exist_ok=True)
        np.save(args.dump / "input.npy", result.input.astype(np.float32))
        for index, out in enumerate(result.outputs):
            np.save(args.dump / f"layer{index:02d}.npy", out)
        print(f"owlet: wrote input.npy and {len(result.outputs)} layer dumps to {args.dump}")
    if args.json:
        doc = detections_doc(image_size, result.detections)
        args.json.write_text(json.dumps(doc, indent=1))
        print(f"owlet: wrote {args.json}")
    if args.out:
        draw_detections(args.image, result.detections, names, args.out)
        print(f"owlet: wrote {args.out}")
    return 0


def cmd_quantize(args) -> int:
    net = _load_network(args)
    qnet = _calibrate(net, args.calib, args.calib_method)
    qnet.save(args.output)
    print(f"{'layer':>5} {'kind':<14} {'output':<14} {'out scale':>10} {'acc bits':>8}")
    for index, layer in enumerate(qnet.layers):
        shape = "x".join(map(str, layer.out_shape))
        if layer.kind == "convolutional":
            scale = "int32" if layer.output_int32 else f"{layer.out_scale:.4g}"
            bits = layer.accumulator_bits
            print(f"{index:>5} {layer.kind:<14} {shape:<14} {scale:>10} {bits:>8}")
        else:
            print(f"{index:>5} {layer.kind:<14} {shape:<14}")
    print(f"owlet: wrote {args.output}")
    return 0


def cmd_calib_report(args) -> int:
    from model.image import load_image
    from model.report import compare_calibration, image_variants

    net = _load_network(args)
    images = [load_image(path) for path in args.images]
    calibration = images + [v for img in images for v in image_variants(img, args.variants, 1)]
    held_out = [v for img in images for v in image_variants(img, args.variants, 2)]
    results = compare_calibration(net, calibration, held_out)
    print(f"calibrated on {len(calibration)} images, evaluated on {len(held_out)} held-out ones")
    print("layer  " + "  ".join(f"{r.method:>10}" for r in results) + "   (mean SQNR dB)")
    for index in range(len(net.layers)):
        print(f"{index:>5}  " + "  ".join(f"{r.layer_sqnr_db[index]:>10.1f}" for r in results))
    for r in results:
        print(f"{r.method}: {r.matched}/{r.total} float detections reproduced by int8")
    return 0


def cmd_bench_golden(args) -> int:
    from model.bench import run_golden_bench

    return run_golden_bench(repeat=args.repeat)


def cmd_bench_engine(args) -> int:
    from sim.bench import run_engine_bench

    return run_engine_bench(args.options)


def cmd_report(args) -> int:
    from model.report import run_golden_report
    from model.zoo import DEFAULT_IMAGE

    zoo = _select_model(args)
    image = args.image or (zoo.image if zoo else DEFAULT_IMAGE)
    return run_golden_report(args.cfg, args.weights, image, args.outdir, args.thresh,
                             names=getattr(args, "names", None), variants=args.variants)


def build_parser() -> argparse.ArgumentParser:
    from model.zoo import DEFAULT_IMAGE

    parser = argparse.ArgumentParser(prog="owlet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    infer = sub.add_parser("infer", help="detect objects with the float reference or int8 golden",
                           description="Run the float reference or the int8 golden model on an "
                                       "image, as darknet would, and report the detections.")
    _add_model_arguments(infer)
    infer.add_argument("image", type=Path, nargs="?", default=DEFAULT_IMAGE,
                       help="input image (default: the built-in %(default)s)")
    infer.add_argument("--mode", choices=("float", "int8"), default="float")
    _add_calibration_arguments(infer)
    infer.add_argument("--qmodel", type=Path, metavar="MODEL.npz",
                       help="int8 mode: use this quantized model file instead of calibrating "
                            "(the built-in model's is model/zoo/owlet-tiny.npz)")
    infer.add_argument("--thresh", type=float, default=0.5, help="detection threshold")
    infer.add_argument("--nms", type=float, default=0.45, help="NMS IoU threshold")
    infer.add_argument("--names", type=Path,
                       help="class names, one per line (default: <cfg stem>.names beside the cfg)")
    infer.add_argument("--dump", type=Path, metavar="DIR",
                       help="write input.npy and layerNN.npy for every layer")
    infer.add_argument("--json", type=Path, metavar="OUT.json", help="write detections as JSON")
    infer.add_argument("--out", type=Path, metavar="PNG", help="write an annotated image")
    infer.add_argument("--repeat", type=int, default=0, metavar="N",
                       help="time N forward passes and print ms/frame")
    infer.set_defaults(func=cmd_infer)

    quantize = sub.add_parser("quantize", help="write a quantized model file",
                              description="Fold batch norm, quantize weights to int8 per output "
                                          "channel, calibrate activation scales and write the "
                                          "quantized model (docs/quantized-model-format.md).")
    _add_model_arguments(quantize)
    _add_calibration_arguments(quantize)
    quantize.set_defaults(calib=[DEFAULT_IMAGE])
    quantize.add_argument("-o", "--output", type=Path, required=True, metavar="MODEL.npz")
    quantize.set_defaults(func=cmd_quantize)

    report = sub.add_parser("calib-report", help="compare activation calibration methods",
                            description="Calibrate with each method on images and variants of "
                                        "them, and measure int8 vs float on held-out variants.")
    _add_model_arguments(report)
    report.add_argument("images", type=Path, nargs="*", default=[DEFAULT_IMAGE])
    report.add_argument("--variants", type=int, default=8,
                        help="crops/flips/brightness variants per image (default: %(default)s)")
    report.set_defaults(func=cmd_calib_report)

    bench = sub.add_parser("bench", help="benchmarks: golden model speed, engine cycles")
    bench_sub = bench.add_subparsers(dest="target", required=True, metavar="TARGET")
    golden = bench_sub.add_parser("golden", help="int8 golden model on tiny-YOLOv2-VOC 416x416: "
                                                 "ms/frame against darknet's CPU forward pass")
    golden.add_argument("--repeat", type=int, default=5, metavar="N")
    golden.set_defaults(func=cmd_bench_golden)
    engine = bench_sub.add_parser("engine", add_help=False,
                                  help="RTL engine per layer under Verilator: cycles, MAC "
                                       "utilization, stalls (options: owlet bench engine --help)")
    # Its options belong to sim.bench's own parser: main() hands them over unparsed.
    engine.set_defaults(func=cmd_bench_engine, passes_options=True)

    report = sub.add_parser("report", help="int8 golden model vs float: per-layer SQNR, detections",
                            description="Calibrate on the image, run the float reference and the "
                                        "int8 golden model, print per-layer SQNR and how many "
                                        "float detections int8 keeps; write annotated PNGs and "
                                        "an SQNR plot.")
    _add_model_arguments(report)
    report.add_argument("--image", type=Path,
                        help=f"default: the --model's image, else {DEFAULT_IMAGE}")
    report.add_argument("--variants", type=int, default=8,
                        help="calibrate on the image and this many variants of it, and measure "
                             "detections on as many held-out ones (default: %(default)s)")
    report.add_argument("--thresh", type=float, default=0.5, help="detection threshold")
    report.add_argument("--outdir", type=Path, default=Path("build/report"))
    report.set_defaults(func=cmd_report)

    from firmware.cli import register_cli as register_firmware_cli
    from firmware.driver_cli import register_cli as register_run_cli
    from model.train.cli import register_cli as register_train_cli
    from sim.cli import register_cli as register_sim_cli

    register_train_cli(sub)
    register_firmware_cli(sub)
    register_run_cli(sub)
    register_sim_cli(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, options = parser.parse_known_args(argv)
    if getattr(args, "passes_options", False):
        args.options = options
    elif options:
        parser.error(f"unrecognized arguments: {' '.join(options)}")
    try:
        return args.func(args)
    except (OSError, ValueError) as exc:
        # Bad input (files, formats, shapes) ends in one clear line, not a traceback.
        print(f"owlet: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
