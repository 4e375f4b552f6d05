"""The block RAM output-register pass (``hdl.ecp5.absorb_bram_output_registers``): worked
answers on small hand-written netlists, each refusal on its own, and the pass on what yosys
makes of :class:`hdl.bram.BlockRAM`."""

import copy
import json
from pathlib import Path

import pytest

from hdl.bram import BlockRAM
from hdl.ecp5 import absorb_bram_output_registers, prepare_netlist_file
from hdl.synth import synthesize_design

BUILD = Path(__file__).resolve().parents[1] / "build" / "tests" / "ecp5"
CLK, OTHER_CLK, RD_EN, OTHER_EN, RESET = 2, 3, 4, 5, 6
DO = [10, 11, 12, 13]  # the block RAM's data-out nets
Q = [20, 21, 22, 23]  # the flip-flops' outputs


def _ff(d, q, *, clk=CLK, cemux="1 ", ce=None, lsr="0"):
    connections = {"CLK": [clk], "DI": [d], "LSR": [lsr], "Q": [q]}
    if ce is not None:
        connections["CE"] = [ce]
    return {"type": "TRELLIS_FF",
            "parameters": {"CEMUX": cemux, "CLKMUX": "CLK", "GSR": "DISABLED",
                           "LSRMUX": "LSR", "REGSET": "RESET"},
            "port_directions": {"CLK": "input", "DI": "input", "LSR": "input", "CE": "input",
                                "Q": "output"},
            "connections": connections}


def _netlist(width_b=4, **ff_options):
    """A DP16KD (1K × 18 on port B, written through port A) whose ``DOB0``–``DOB3`` each feed a
    flip-flop; ``ff_options`` go to every flip-flop."""
    ram = {"type": "DP16KD",
           "parameters": {"DATA_WIDTH_A": format(18, "032b"),
                          "DATA_WIDTH_B": format(width_b, "032b"),
                          "GSR": "DISABLED", "REGMODE_A": "NOREG", "REGMODE_B": "NOREG"},
           "port_directions": {"CLKA": "input", "CLKB": "input", "OCEA": "input",
                               "OCEB": "input", "CEB": "input",
                               **{f"DO{s}{k}": "output" for s in "AB" for k in range(18)}},
           "connections": {"CLKA": [CLK], "CLKB": [CLK], "OCEA": ["1"], "OCEB": ["1"],
                           "CEB": ["1"], **{f"DOB{k}": [DO[k]] for k in range(4)}}}
    cells = {"ram": ram, **{f"ff{k}": _ff(DO[k], Q[k], **ff_options) for k in range(4)}}
    return {"modules": {"top": {"cells": cells}}}


def test_a_read_port_and_its_registers_become_the_output_register():
    netlist = _netlist()
    assert absorb_bram_output_registers(netlist) == 4
    cells = netlist["modules"]["top"]["cells"]
    assert list(cells) == ["ram"]
    ram = cells["ram"]
    assert ram["parameters"]["REGMODE_B"] == "OUTREG"
    assert ram["parameters"]["REGMODE_A"] == "NOREG"
    assert [ram["connections"][f"DOB{k}"] for k in range(4)] == [[q] for q in Q]
    assert ram["connections"]["OCEB"] == ["1"]


def test_the_registers_clock_enable_becomes_the_output_clock_enable():
    netlist = _netlist(cemux="CE", ce=RD_EN)
    assert absorb_bram_output_registers(netlist) == 4
    assert netlist["modules"]["top"]["cells"]["ram"]["connections"]["OCEB"] == [RD_EN]


def _with_load_on_do0(netlist):
    netlist["modules"]["top"]["cells"]["lut"] = {
        "type": "LUT4", "parameters": {}, "port_directions": {"A": "input", "Z": "output"},
        "connections": {"A": [DO[0]], "Z": [30]}}
    return netlist


def _with_one_enable_differing(netlist):
    netlist["modules"]["top"]["cells"]["ff3"] = _ff(DO[3], Q[3], cemux="CE", ce=OTHER_EN)
    return netlist


@pytest.mark.parametrize("netlist", [
    pytest.param(_netlist(lsr=RESET), id="flip-flops with a reset"),
    pytest.param(_netlist(clk=OTHER_CLK), id="flip-flops on another clock"),
    pytest.param(_netlist(cemux="INV", ce=RD_EN), id="an inverted clock enable"),
    pytest.param(_with_one_enable_differing(_netlist(cemux="CE", ce=RD_EN)),
                 id="two clock enables"),
    pytest.param(_with_load_on_do0(_netlist()), id="a data output with a second load"),
    pytest.param(_netlist(width_b=36), id="36-bit mode"),
])
def test_anything_else_is_left_alone(netlist):
    before = copy.deepcopy(netlist)
    assert absorb_bram_output_registers(netlist) == 0
    assert netlist == before


@pytest.mark.parametrize("shape, depth, read_enable", [(512, 1024, False), (16, 2048, True)])
def test_every_register_of_a_block_ram_is_absorbed_after_yosys(shape, depth, read_enable):
    """yosys maps :class:`BlockRAM` to DP16KD plus one flip-flop per data bit (and a register
    for nothing else); afterwards the DP16KDs drive ``rd_data`` themselves, from ``OUTREG``."""
    out = BUILD / f"bram_{shape}x{depth}"
    report = synthesize_design(BlockRAM(shape, depth, read_enable=read_enable), "bram", out)
    assert report["TRELLIS_FF"] == shape, report
    # rewritten in place; no engine cells, so nothing for the floorplan
    assert prepare_netlist_file(out / "bram.json") == (shape, 0)
    netlist = json.loads((out / "bram.json").read_text())
    module = netlist["modules"]["bram"]
    types = [cell["type"] for cell in module["cells"].values()]
    assert "TRELLIS_FF" not in types and types.count("DP16KD") == report["DP16KD"]
    driven = {bit for cell in module["cells"].values() if cell["type"] == "DP16KD"
              for port, bits in cell["connections"].items() if port.startswith("DO")
              for bit in bits}
    assert set(module["ports"]["rd_data"]["bits"]) <= driven
    for cell in module["cells"].values():
        if cell["type"] == "DP16KD":
            assert cell["parameters"]["REGMODE_B"] == "OUTREG"
            enable = cell["connections"]["OCEB"]
            assert enable == (module["ports"]["rd_en"]["bits"] if read_enable else ["1"])
