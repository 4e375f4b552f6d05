"""The ULX3S board top as the board cosimulation builds it: every block of the board but the
pins, and LiteDRAM's simulation core in place of the SDR core.

::

   clk_sys (50 MHz: bridge + LiteDRAM, one net as on the ULX3S)       clk_eng (engine)
   host_rx_* ─► SyncFIFOBuffered ─► BoardGlue (BusBridge, decoder, crossings, arbiter)
   host_tx_* ◄──────────────────────┘   │ seq_csr / seq_axi ◄──────────► Sequencer (eng)
                                        │ dram_ctrl / dram_axi ────────► litedram_ulx3s_sim

What differs from :class:`hdl.board.top.BoardTop` on the ULX3S, and why:

- the host's bytes enter :class:`hdl.bridge.BusBridge`'s byte stream, not the UART pins (a byte
  per cycle instead of 17 cycles per bit: the program image uploads in seconds, not minutes);
  a small :class:`amaranth.lib.fifo.SyncFIFOBuffered` in front of it gives the testbench a
  ``w_rdy`` that depends on registers only, so the byte pump can decide at the falling edge
  whether the next rising edge takes its byte;
- the DRAM controller is ``litedram_gen --sim`` of the same YAML (``constraints/litedram/
  ulx3s.yml``): the same controller, crossbar and AXI port, with LiteDRAM's ``SDRAMPHYModel``
  and its memory instead of GENSDRPHY and the pads; it has no reset input (a power-on
  register);
- the clocks come from the testbench, not the PLL: ``clk_sys`` for the bridge and LiteDRAM
  (on the board both are the PLL's CLKOP, ``clk_sdr``), ``clk_eng`` for the sequencer, so
  every crossing of the board (:class:`hdl.board.cdc.WishboneCDC`,
  :class:`hdl.board.cdc.AXI4CDC`) runs between unrelated clocks as on the board.
"""

import hashlib
from pathlib import Path

from amaranth import ClockDomain, ClockSignal, Module, ResetSignal
from amaranth.hdl import DomainRenamer
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hdl.board.boards import ULX3S
from hdl.board.litedram import LiteDRAMCore, generate
from hdl.board.top import BoardGlue, board_word
from hdl.descriptor import EngineConfig
from hdl.sequencer import Sequencer
from sim.runner import build_top

__all__ = ["TOPLEVEL", "BoardSimTop", "build_board"]

TOPLEVEL = "owlet_board"
_ROOT = Path(__file__).resolve().parents[1]


class BoardSimTop(wiring.Component):
    """The ULX3S board top for the cosimulation (module docstring).

    Parameters
    ----------
    cfg : EngineConfig
    engine_mhz : float
        The engine clock the testbench drives (goes into the ID answer's board word).
    core : str
        Module name of the generated LiteDRAM simulation core.

    Attributes
    ----------
    clk_sys, clk_eng, rst : In(1)
        Clocks; ``rst`` resets the bridge and engine domains (LiteDRAM resets itself).
    host_rx_data : In(8), host_rx_valid : In(1), host_rx_rdy : Out(1)
        Host bytes into the bridge: a byte is taken at a rising edge with ``valid`` and ``rdy``
        high; ``rdy`` depends on registers only.
    host_tx_data : Out(8), host_tx_valid : Out(1)
        Answer bytes; always taken (one per cycle with ``valid``).
    init_done, init_error, irq : Out(1)
        LiteDRAM's two control bits and the sequencer's done (the board's LEDs).
    hold_en : In(1), hold_layer : In(16)
        Fault injection (no counterpart on the board): while ``hold_en`` is high and the
        sequencer's ``progress`` equals ``hold_layer``, its AXI read address channel is held
        (ARVALID kept from the interconnect, ARREADY from the sequencer), so layer
        ``hold_layer`` never finishes, like a hung memory; the bridge's own DRAM path is not
        held. Dropping ``hold_en`` lets the layer go on.
    """

    def __init__(self, cfg, engine_mhz, core):
        self.cfg, self.engine_mhz, self.core = cfg, engine_mhz, core
        super().__init__({
            "clk_sys": In(1), "clk_eng": In(1), "rst": In(1),
            "host_rx_data": In(8), "host_rx_valid": In(1), "host_rx_rdy": Out(1),
            "host_tx_data": Out(8), "host_tx_valid": Out(1),
            "init_done": Out(1), "init_error": Out(1), "irq": Out(1),
            "hold_en": In(1), "hold_layer": In(16),
        })

    def elaborate(self, platform):
        m = Module()
        for name, clk in (("bridge", self.clk_sys), ("eng", self.clk_eng)):
            m.domains += ClockDomain(name)
            m.d.comb += [ClockSignal(name).eq(clk), ResetSignal(name).eq(self.rst)]
        board = ULX3S
        m.submodules.litedram = core = LiteDRAMCore(
            self.core, {}, addr_width=board.dram_addr_width, data_width=board.dram_data_width,
            sim=True)
        m.domains.dram = ClockDomain("dram")
        m.d.comb += [core.clk_in.eq(self.clk_sys), ClockSignal("dram").eq(core.user_clk),
                     ResetSignal("dram").eq(core.user_rst)]

        glue = BoardGlue(dram_size=board.dram_size, dram_data_width=board.dram_data_width,
                         divisor=None,
                         board=board_word(board.board_id, self.engine_mhz, self.cfg))
        m.submodules.glue = glue
        m.submodules.rx_fifo = rx = DomainRenamer("bridge")(SyncFIFOBuffered(width=8, depth=16))
        m.d.comb += [rx.w_data.eq(self.host_rx_data), rx.w_en.eq(self.host_rx_valid),
                     self.host_rx_rdy.eq(rx.w_rdy)]
        wiring.connect(m, rx.r_stream, glue.host_rx)
        m.d.comb += [self.host_tx_data.eq(glue.host_tx.payload),
                     self.host_tx_valid.eq(glue.host_tx.valid), glue.host_tx.ready.eq(1)]

        m.submodules.sequencer = seq = DomainRenamer("eng")(Sequencer(self.cfg))
        wiring.connect(m, glue.seq_csr, seq.csr)
        hold = self.hold_en & (seq.progress == self.hold_layer)
        for name, member in seq.axi.signature.members.items():
            src, dst = getattr(seq.axi, name), getattr(glue.seq_axi, name)
            if member.flow == wiring.Flow.Out:
                m.d.comb += dst.eq(src & ~hold if name == "arvalid" else src)
            else:
                m.d.comb += src.eq(dst & ~hold if name == "arready" else dst)
        m.d.comb += [
            core.ctrl.cyc.eq(glue.dram_ctrl.cyc), core.ctrl.stb.eq(glue.dram_ctrl.stb),
            core.ctrl.we.eq(glue.dram_ctrl.we), core.ctrl.adr.eq(glue.dram_ctrl.adr),
            core.ctrl.dat_w.eq(glue.dram_ctrl.dat_w), glue.dram_ctrl.dat_r.eq(core.ctrl.dat_r),
            glue.dram_ctrl.ack.eq(core.ctrl.ack), glue.dram_ctrl_err.eq(core.ctrl_err),
        ]
        for name, member in glue.dram_axi.signature.members.items():
            src, dst = getattr(glue.dram_axi, name), getattr(core.axi, name)
            if member.flow == wiring.Flow.Out:
                m.d.comb += dst.eq(src)  # addresses truncate to the DRAM's 32 MB
            else:
                m.d.comb += src.eq(dst)
        m.d.comb += [self.init_done.eq(core.init_done), self.init_error.eq(core.init_error),
                     self.irq.eq(seq.irq)]
        return m


def build_board(cfg=None, engine_mhz=100.0, *, sim=None, waves=None):
    """Generate LiteDRAM's simulation core (``litedram_gen --sim``, cached) and build (or reuse)
    the Verilator model of :class:`BoardSimTop` with it.

    Returns
    -------
    (build_dir, generated)
        The build directory and :func:`hdl.board.litedram.generate`'s dict (``csr_csv``...).
    """
    cfg = cfg or EngineConfig()
    gen = generate(ULX3S.name, sim=True)
    # build_top hashes hdl/*.py; the board files live one level down: hash them here.
    digest = hashlib.sha256()
    board_files = ("top.py", "cdc.py", "interconnect.py", "litedram.py", "boards.py")
    for path in [*(_ROOT / "hdl" / "board" / f for f in board_files), Path(__file__)]:
        digest.update(path.read_bytes())
    key = (repr(cfg), engine_mhz, gen["name"], digest.hexdigest()[:16])
    build_dir = build_top(lambda: BoardSimTop(cfg, engine_mhz, gen["name"]), TOPLEVEL, key,
                          sim=sim, waves=waves, extra_sources=[gen["verilog"]])
    return build_dir, gen
