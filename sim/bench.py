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
from sim.ddr import DdrTiming
from sim.layer import random_case
from sim.runner import run_jobs

__all__ = ["REFERENCE_LAYERS", "VOC_LAYERS", "format_table", "run_engine_bench"]

# (name, C, H, W, O, K, pool, int32 out). Ref: shared/reference/darknet-tiny96/ref-tiny.cfg.
REFERENCE_LAYERS = [
    ("ref.0", 3, 96, 96, 8, 3, Pool.P2S2, False),
    ("ref.2", 8, 48, 48, 16, 3, Pool.P2S2, False),
    ("ref.4", 16, 24, 24, 32, 3, Pool.P2S2, False),
    ("ref.6", 32, 12, 12, 64, 3, Pool.P2S2, False),
    ("ref.8", 64, 6, 6, 64, 3, Pool.P2S2, False),
    ("ref.10", 64, 3, 3, 128, 3, Pool.P2S1, False),
    ("ref.12", 128, 3, 3, 128, 3, Pool.NONE, False),
    ("ref.13", 128, 3, 3, 40, 1, Pool.NONE, True),
]
# tiny-YOLOv2-VOC, 416x416 input (darknet yolov2-tiny-voc.cfg shapes).
VOC_LAYERS = [
    ("voc.0", 3, 416, 416, 16, 3, Pool.P2S2, False),
    ("voc.2", 16, 208, 208, 32, 3, Pool.P2S2, False),
    ("voc.4", 32, 104, 104, 64, 3, Pool.P2S2, False),
    ("voc.6", 64, 52, 52, 128, 3, Pool.P2S2, False),
    ("voc.8", 128, 26, 26, 256, 3, Pool.P2S2, False),
    ("voc.10", 256, 13, 13, 512, 3, Pool.P2S1, False),
    ("voc.12", 512, 13, 13, 1024, 3, Pool.NONE, False),
    ("voc.13", 1024, 13, 13, 1024, 3, Pool.NONE, False),
    ("voc.14", 1024, 13, 13, 125, 1, Pool.NONE, True),
]

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
