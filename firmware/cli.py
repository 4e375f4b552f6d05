"""``owlet compile``: a quantized model file to an engine program file.

``owlet/cli.py`` adds the command with :func:`register_cli`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["cmd_compile", "parse_size", "register_cli"]

_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """Bytes from ``"33554432"``, ``"0x2000000"`` or ``"32M"`` (K, M, G are powers of 1024)."""
    unit = _UNITS.get(text[-1:].upper(), 1)
    try:
        return int(text[:-1] if unit > 1 else text, 0) * unit
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size in bytes: '{text}'") from None


def register_cli(subparsers) -> None:
    """Add the ``compile`` command to the ``owlet`` sub-command parsers."""
    from firmware.compiler import DEFAULT_ALIGNMENT, DEFAULT_MEMORY_SIZE

    parser = subparsers.add_parser(
        "compile", help="compile a quantized model into an engine program",
        description="Fuse each convolution with its maxpool, lay out DDR (descriptors, weights, "
                    "requant tables, feature maps with buffer reuse) and write the program file "
                    "(docs/program-format.md).")
    parser.add_argument("model", type=Path, metavar="MODEL.npz",
                        help="quantized model file (owlet quantize)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="PROGRAM.bin")
    parser.add_argument("--p-ic", type=int, default=8,
                        help="input channels per cycle = bytes per AXI beat (default: %(default)s)")
    parser.add_argument("--p-oc", type=int, default=16,
                        help="output channels per cycle (default: %(default)s)")
    parser.add_argument("--memory-size", type=parse_size, default=DEFAULT_MEMORY_SIZE,
                        metavar="BYTES", help="DDR size, e.g. 32M (default: %(default)s)")
    parser.add_argument("--alignment", type=parse_size, default=DEFAULT_ALIGNMENT,
                        metavar="BYTES", help="segment alignment (default: %(default)s)")
    parser.add_argument("--no-reuse", action="store_true",
                        help="give every feature map its own buffer, so all layers' outputs "
                             "stay in DDR after the run")
    parser.add_argument("--image", type=Path,
                        help="letterbox and quantize this image into the input segment")
    parser.add_argument("--no-pack-taps", dest="pack_taps", action="store_false",
                        help="run a first 3x3 layer of fewer channels than P_ic unpacked "
                             "(docs/engine.md, \"Tap packing\"): more passes, a 4x smaller "
                             "input map")
    parser.set_defaults(func=cmd_compile)


def cmd_compile(args) -> int:
    """Compile ``args.model`` and print the memory map, the descriptors and the footprint."""
    from firmware.compiler import compile_network
    from firmware.executor import descriptors
    from firmware.image import program_to_bytes
    from hdl.descriptor import EngineConfig, Pool
    from model.golden import quantize_input
    from model.pipeline import prepare_input
    from model.quant import QuantizedNetwork

    qnet = QuantizedNetwork.load(args.model)
    cfg = EngineConfig(p_ic=args.p_ic, p_oc=args.p_oc, data_width=8 * args.p_ic)
    x_q = None
    if args.image is not None:
        x_q = quantize_input(prepare_input(args.image, qnet.input_shape)[0])
    program = compile_network(qnet, cfg, memory_size=args.memory_size, reuse=not args.no_reuse,
                              alignment=args.alignment, x_q=x_q, pack_taps=args.pack_taps)
    blob = program_to_bytes(program)
    args.output.write_bytes(blob)

    n = len(program.layers)
    print(f"{'segment':<16} {'kind':<12} {'address':>10} {'bytes':>10}  live layers")
    for seg in sorted(program.segments, key=lambda s: (s.addr, s.first_layer)):
        first = "host" if seg.first_layer < 0 else seg.first_layer
        last = "host" if seg.last_layer >= n else seg.last_layer
        print(f"{seg.name:<16} {seg.kind.name.lower():<12} {seg.addr:>#10x} {seg.size:>10}  "
              f"{first}..{last}")
    print()
    print(f"{'#':>2} {'darknet':<8} {'in':<13} {'out':<13} {'k':<2} {'pool':<4} {'out':<5} "
          f"{'tiles':>5} {'og':>3}  {'in_addr':>10} {'out_addr':>10} {'w_addr':>10} "
          f"{'param_addr':>10}")
    for i, (layer, d) in enumerate(zip(program.layers, descriptors(program), strict=True)):
        tiles = -(-d["out_height"] // d["tile_rows"])
        print(f"{i:>2} {layer.covers:<8} {'x'.join(map(str, layer.in_shape)):<13} "
              f"{'x'.join(map(str, layer.out_shape)):<13} {layer.kernel:>1}"
              f"{'p' if layer.taps_packed else ' '}"
              f"{Pool(d['pool']).name:<4} {'int32' if d['out_int32'] else 'int8':<5} "
              f"{tiles:>5} {d['og_passes']:>3}  {d['in_addr']:>#10x} {d['out_addr']:>#10x} "
              f"{d['w_addr']:>#10x} {d['param_addr']:>#10x}")
    if any(layer.taps_packed for layer in program.layers):
        print("k = 3p: tap-packed, a 1x1 convolution of the input's 3x3 neighbourhoods "
              "(docs/engine.md, \"Tap packing\")")
    print()
    saved = program.footprint_without_reuse - program.footprint
    print(f"DDR footprint: {program.footprint} bytes ({program.footprint / 2**20:.2f} MiB) "
          f"{'with' if not args.no_reuse else 'without'} buffer reuse; "
          f"{program.footprint_without_reuse} bytes without reuse (reuse saves {saved}); "
          f"memory {args.memory_size} bytes")
    print(f"owlet: wrote {args.output} ({len(blob)} bytes, {n} descriptors at "
          f"{program.descriptor_addr:#x})")
    return 0
