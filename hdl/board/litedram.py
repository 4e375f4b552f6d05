"""LiteDRAM's standalone controller: generated at build time from our YAML, wrapped as a
:class:`wiring.Component`.

:func:`generate` runs ``litedram_gen`` (pip ``litedram``) on ``constraints/litedram/<board>.yml``
into ``build/litedram/<board>[-sim]/`` and patches one thing in its Verilog: the generator
declares the DRAM data pads (``dq``, ``dqs_p``, ``dqs_n``) as ``input`` although the core drives
them through its own bidirectional ``TRELLIS_IO``/``BB`` cells, so they become ``inout`` — a
module port that a tristate buffer drives must be ``inout`` for yosys to connect it to the pad.
:class:`LiteDRAMCore` instantiates the module with :class:`amaranth.hdl.Instance`.

The core's ports (``litedram/gen.py`` in LiteDRAM 2024.12): ``clk``/``rst`` in; ``user_clk`` /
``user_rst`` out (its system clock: the user port and the Wishbone control port live there);
``init_done``/``init_error`` out (the two CSRs of its ``ddrctrl``: the user port is blocked
until software writes ``init_done`` = 1); ``wb_ctrl_*`` (Wishbone slave, 30-bit word addresses,
its CSR map is ``csr.csv``); ``user_port_axi_0_*`` (AXI4 slave); the DRAM pads.
"""

import re
import subprocess
import sys
from pathlib import Path

from amaranth import Instance, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl.axi import AXI4Signature, WishboneSignature

__all__ = ["CONSTRAINTS", "GenerationError", "LiteDRAMCore", "generate", "module_name"]

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "constraints" / "litedram"
BUILD = ROOT / "build" / "litedram"
_BIDIR = ("dq", "dqs_p", "dqs_n")


class GenerationError(RuntimeError):
    """``litedram_gen`` failed; the message names the YAML and ends with the tool's last lines."""


def module_name(board, sim=False):
    """The generated module's name: ``litedram_<board>`` (``litedram_<board>_sim`` for --sim)."""
    return f"litedram_{board}" + ("_sim" if sim else "")


def generate(board, *, sim=False, yml=None, out_dir=None):
    """Generate the core for ``board`` (unless its Verilog is newer than the YAML).

    Parameters
    ----------
    board : str
        ``ulx3s`` or ``ecpix5``: reads ``constraints/litedram/<board>.yml``.
    sim : bool
        ``litedram_gen --sim``: the controller with LiteDRAM's behavioural PHY and DRAM model.

    Returns
    -------
    dict
        ``verilog`` (Path of the patched module), ``csr_csv`` (Path), ``name`` (module name).

    Raises
    ------
    GenerationError
        Naming the YAML and quoting the last lines of the tool's output.
    """
    yml = Path(yml or CONSTRAINTS / f"{board}.yml")
    if not yml.exists():
        raise GenerationError(f"no LiteDRAM configuration for board {board!r}: {yml} is missing")
    name = module_name(board, sim)
    out = Path(out_dir or BUILD / name)
    verilog = out / "gateware" / f"{name}.v"
    result = {"verilog": verilog, "csr_csv": out / "csr.csv", "name": name}
    if verilog.exists() and verilog.stat().st_mtime > yml.stat().st_mtime:
        return result
    out.mkdir(parents=True, exist_ok=True)
    tool = Path(sys.executable).with_name("litedram_gen")
    cmd = [str(tool), str(yml), "--no-compile", "--output-dir", str(out), "--name", name]
    if sim:
        cmd.append("--sim")
    log = out / "litedram_gen.log"
    with open(log, "w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=out)
    if done.returncode != 0 or not verilog.exists():
        tail = "\n".join(log.read_text().splitlines()[-12:])
        raise GenerationError(f"litedram_gen failed on {yml} (exit {done.returncode}; full log "
                              f"{log}); its last lines:\n{tail}")
    text = verilog.read_text()
    for pad in _BIDIR:
        text = re.sub(rf"\binput(\s+wire\s+(?:\[\d+:0\]\s+)?\w+_{pad}\s*,)", r"inout\1", text)
    verilog.write_text(text)
    return result


class LiteDRAMCore(wiring.Component):
    """The generated controller as an Amaranth component.

    The caller drives a clock domain from ``user_clk``/``user_rst`` (the core's system clock and
    its synchronised reset) and places the user-port logic there.

    Parameters
    ----------
    name : str
        Module name from :func:`generate`.
    pads : dict
        Instance port name (``sdram_a``, ``ddram_dq``, ...) to the IO port or signal it connects
        to; the pads of ``dq``/``dqs`` are connected as ``io``.
    addr_width : int
        AXI byte-address width of the user port (25 for 32 MB, 29 for 512 MB).
    data_width : int
        AXI data width of the user port (64 on the ULX3S's YAML, 128 on the ECPIX-5's).
    sim : bool
        The ``litedram_gen --sim`` module: LiteDRAM's PHY and DRAM model inside, no pads, no
        ``rst`` input (its reset is a power-on register), a ``sim_trace`` input (tied to 0).

    Attributes
    ----------
    clk_in, rst_in : In(1)
        ``clk``/``rst`` of the core (the SDR core's system clock; the DDR3 core's PLL input).
    axi : In(AXI4Signature(addr_width, data_width))
    ctrl : In(WishboneSignature(14, 32)), ctrl_err : Out(1)
        The control port's first 64 KB (its CSRs): word addresses.
    init_done, init_error : Out(1)
    user_clk, user_rst : Out(1)
    """

    def __init__(self, name, pads, *, addr_width, data_width, sim=False):
        if sim and pads:
            raise ValueError(f"the simulation core {name!r} has no pads, not {sorted(pads)}")
        self.name, self.pads, self.sim = name, dict(pads), sim
        super().__init__({
            "clk_in": In(1), "rst_in": In(1),
            "axi": In(AXI4Signature(addr_width=addr_width, data_width=data_width)),
            "ctrl": In(WishboneSignature(addr_width=14, data_width=32)),
            "ctrl_err": Out(1),
            "init_done": Out(1), "init_error": Out(1), "user_clk": Out(1), "user_rst": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        ports = {
            "i_clk": self.clk_in, "i_rst": self.rst_in,
            "o_user_clk": self.user_clk, "o_user_rst": self.user_rst,
            "o_init_done": self.init_done, "o_init_error": self.init_error,
            "i_wb_ctrl_adr": self.ctrl.adr, "i_wb_ctrl_dat_w": self.ctrl.dat_w,
            "o_wb_ctrl_dat_r": self.ctrl.dat_r, "i_wb_ctrl_sel": 0xF,
            "i_wb_ctrl_cyc": self.ctrl.cyc, "i_wb_ctrl_stb": self.ctrl.stb,
            "o_wb_ctrl_ack": self.ctrl.ack, "i_wb_ctrl_we": self.ctrl.we,
            "i_wb_ctrl_cti": 0, "i_wb_ctrl_bte": 0, "o_wb_ctrl_err": self.ctrl_err,
        }
        for member, flow in ((n, v.flow) for n, v in self.axi.signature.members.items()):
            # The port is In(AXI4Signature): its (flipped) members say our direction.
            direction = "i" if flow == wiring.Flow.In else "o"
            ports[f"{direction}_user_port_axi_0_{member}"] = getattr(self.axi, member)
        if self.sim:
            del ports["i_rst"]
            ports["i_sim_trace"] = 0
        for pad, port in self.pads.items():
            bidir = pad.rsplit("_", 1)[-1] in ("dq",) or pad.endswith(("dqs_p", "dqs_n"))
            direction = "io" if bidir else ("i" if pad.endswith("clk_n") else "o")
            ports[f"{direction}_{pad}"] = port
        m.submodules.core = Instance(self.name, **ports)
        return m
