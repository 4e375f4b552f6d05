"""Engine benchmark: per-layer cycles, MAC utilization and stall breakdown on the RTL.

Entry point :func:`run_engine_bench` (wired to ``owlet bench engine`` / ``make bench``). Each
layer of the chosen network runs on the Verilated engine with random int8 data (the engine's
timing does not depend on values) through the DDR model, and is checked bit for bit against the
golden model on the way.

MAC utilization = useful MACs / (P_ic · P_oc · cycles), useful MACs = O·C·K·K·H·W (real channels,
stride 1); cycles from start to done as counted by the engine's ``cycles`` counter.
"""

import argparse
import json

import numpy as np

from hdl.descriptor import EngineConfig, Pool
from model.darknet import parse_cfg
from model.zoo import REFERENCE_CFG, TINY_YOLO_VOC_CFG
from sim.ddr import DdrTiming
from sim.layer import random_case
from sim.runner import run_jobs

__all__ = [
    "REFERENCE_LAYERS",
    "VOC_LAYERS",
    "engine_layers",
    "format_table",
    "run_engine_bench",
]

def engine_layers(cfg_path, prefix):
    """The engine layers of a darknet cfg, as the compiler fuses them.

    Returns
    -------
    list of (name, C, H, W, O, K, pool, int32 out)
        One per convolution, named ``prefix.<darknet index>``, with the maxpool that follows it
        fused (:class:`hdl.descriptor.Pool`); the last convolution writes int32.
    """
    layers = parse_cfg(cfg_path).layers
    convs = [i for i, layer in enumerate(layers) if layer.kind == "convolutional"]
    entries = []
    for i in convs:
        conv, after = layers[i], layers[i + 1] if i + 1 < len(layers) else None
        pool = Pool.NONE
        if after is not None and after.kind == "maxpool":
            pool = {2: Pool.P2S2, 1: Pool.P2S1}[after.stride]
        c, h, w = conv.in_shape
        entries.append((f"{prefix}.{i}", c, h, w, conv.filters, conv.size, pool, i == convs[-1]))
    return entries


REFERENCE_LAYERS = engine_layers(REFERENCE_CFG, "ref")
VOC_LAYERS = engine_layers(TINY_YOLO_VOC_CFG, "voc")
STALLS = ("stall_input", "stall_weights", "stall_requant", "stall_output")


def bench_jobs(layers, seed=0, timing=None):
    """One job per layer with random data; ``timing`` defaults to 30-cycle latency, no
    backpressure (the performance goal's DDR model)."""
    rng = np.random.default_rng(seed)
    timing = timing or DdrTiming(latency=30)
    return [{"case": random_case(rng, name, c, h, w, o, k, pool, int32), "timing": timing}
            for name, c, h, w, o, k, pool, int32 in layers]


def format_table(results, cfg):
    """The benchmark table as text, one row per layer plus a total."""
    head = (f"{'layer':8} {'cycles':>10} {'MACs':>12} {'util':>6} {'input':>8} {'weights':>8} "
            f"{'requant':>8} {'output':>8} {'exact':>5}")
    lines = [head, "-" * len(head)]
    total_cycles = total_macs = 0
    for r in results:
        c = r["counters"]
        util = r["macs"] / (cfg.p_ic * cfg.p_oc * c["cycles"])
        total_cycles += c["cycles"]
        total_macs += r["macs"]
        lines.append(f"{r['name']:8} {c['cycles']:>10} {r['macs']:>12} {util:>6.1%} "
                     + " ".join(f"{c[s]:>8}" for s in STALLS)
                     + f" {'yes' if not r['mismatches'] else 'NO':>5}")
    if total_cycles:
        lines.append(f"{'total':8} {total_cycles:>10} {total_macs:>12} "
                     f"{total_macs / (cfg.p_ic * cfg.p_oc * total_cycles):>6.1%}")
    return "\n".join(lines)


def run_engine_bench(argv=None):
    """Command-line benchmark. Returns 0 if every layer ran bit-exact, 1 otherwise.

    Options: ``--network ref|voc|all`` (``voc`` is the slow, full-size tiny-YOLOv2-VOC run),
    ``--layers NAME,...`` to pick layers, ``--latency N``, ``--seed N``, ``--json FILE``.
    """
    parser = argparse.ArgumentParser(prog="owlet bench engine", description=__doc__.split("\n")[0])
    parser.add_argument("--network", choices=("ref", "voc", "all"), default="ref")
    parser.add_argument("--layers", help="comma-separated layer names (default: all)")
    parser.add_argument("--latency", type=int, default=30, help="DDR read latency, cycles")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    layers = {"ref": REFERENCE_LAYERS, "voc": VOC_LAYERS,
              "all": REFERENCE_LAYERS + VOC_LAYERS}[args.network]
    if args.layers:
        wanted = set(args.layers.split(","))
        layers = [layer for layer in layers if layer[0] in wanted]
    cfg = EngineConfig()
    jobs = bench_jobs(layers, args.seed, DdrTiming(latency=args.latency))
    results, ok = run_jobs(jobs, f"bench-{args.network}", cfg)
    print(f"engine P_ic={cfg.p_ic} x P_oc={cfg.p_oc}, DDR {cfg.data_width} bits/cycle, "
          f"latency {args.latency} cycles")
    print(format_table(results, cfg))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if ok and len(results) == len(jobs) else 1


if __name__ == "__main__":
    raise SystemExit(run_engine_bench())
