"""The two boards: platform (amaranth-boards), clocks, DRAM pins and core, LEDs.

Pins come from amaranth-boards 0.0.21 and were checked against litex-boards'
``radiona_ulx3s.py`` and ``lambdaconcept_ecpix5.py`` (the platforms LiteDRAM's own targets use):
the ULX3S SDRAM and the ECPIX-5 DDR3 pin lists agree pin for pin. Differences handled here:

- ULX3S: the SDRAM clock (F19) is not driven by the SDR core: a 90°-shifted copy of its clock
  through an ODDRX1F (LiteX's ULX3S target does the same: ``DDROutput(1, 0, sdram_clock,
  sys_ps)``), so the clock edge sits in the middle of the data eye.
- ECPIX-5: the DDR3 pads are handed to LiteDRAM's ECP5DDRPHY raw (``dir="-"``; it instantiates
  its own DDR and DQS cells); differential pads are the P pin only (the ECP5 SSTL15D buffer owns
  its N pin). The board has no DDR3 ``reset_n`` or ``cs_n`` pin (litex-boards lists none): the
  core's outputs for them stay unconnected.

Clock constraints: each PLL output is a named Signal (``clk_<domain>``) with yosys's ``keep``
attribute, constrained with ``platform.add_clock_constraint``. Without ``keep``, yosys merges
the wire into the PLL's ``pll.clk`` bus during ``opt_clean`` and nextpnr warns ``net 'clk_sdr'
does not exist in design, ignoring clock constraint`` (the LPF's ``FREQUENCY NET`` names a net
that no longer exists). With it, the LPF's constraints and the timing report name the nets
``clk_sdr``, ``clk_eng``, ``clk_bridge``, ``clk_dram``; nextpnr also derives the same frequencies
from the PLL's input constraint (its "Derived frequency constraint" lines), which agree.
The ULX3S's dram domain *is* ``clk_sdr`` (the SDR core's ``user_clk`` is its ``clk`` input:
``assign user_clk = sys_clk; assign sys_clk = clk`` in the generated Verilog), so it gets no
second constraint; the ECPIX-5's comes from LiteDRAM's own PLL and CLKDIVF, constrained on a
kept ``clk_dram``.
"""

from dataclasses import dataclass

from amaranth import ClockDomain, ClockSignal, ResetSignal, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer
from amaranth_boards.ecpix5 import ECPIX585Platform
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from hdl.board.clocks import PLL, PLLOutput
from hdl.board.litedram import LiteDRAMCore, generate

__all__ = ["BOARDS", "ECPIX5", "ULX3S", "Board"]

#: The engine clock may come out this much below its request (the PLL's divider steps).
ENGINE_TOLERANCE = 0.25


@dataclass(eq=False)
class Board:
    """What the board top needs to know about a board (see :class:`ULX3S`, :class:`ECPIX5`)."""

    name: str
    board_id: int  # the ID answer's board byte
    dram_size: int
    dram_addr_width: int  # LiteDRAM's AXI byte-address width
    dram_data_width: int

    # Set by clocks(), used by dram(): the board top calls them in that order.
    _dram_clk = None
    _dram_rst = None

    def _domain(self, m, platform, name, clk, freq, arst):
        """A clock domain ``name`` on ``clk`` (a Signal), constrained, reset from ``arst``."""
        m.domains += ClockDomain(name)
        m.d.comb += ClockSignal(name).eq(clk)
        platform.add_clock_constraint(clk, freq)
        m.submodules[f"rst_{name}"] = ResetSynchronizer(arst, domain=name)

    def _pll(self, m, platform, f_in, clk_in, outputs):
        """An EHXPLLL; returns it and ``{domain: (clock Signal named clk_<domain>, Hz)}``."""
        m.submodules.pll = pll = PLL(f_in, outputs)
        clks = {}
        for i, (out, (_, _, _, _, f)) in enumerate(zip(outputs, pll.solution.outputs, strict=True)):
            # keep: the constrained net must survive yosys under this name (module docstring).
            clks[out.domain] = (Signal(name=f"clk_{out.domain}", attrs={"keep": 1}), f)
            m.d.comb += clks[out.domain][0].eq(pll.clk[i])
        m.d.comb += pll.clk_in.eq(clk_in)
        return pll, clks

    def leds(self, m, platform, *, seq, core):
        """LED 0: DRAM init done; LED 1: the sequencer's done; LED 2: DRAM init error."""
        for i, value in enumerate((core.init_done, seq.irq, core.init_error)):
            m.d.comb += platform.request("led", i).o.eq(value)


class _ULX3S(Board):
    def platform(self):
        return ULX3S_85F_Platform()

    def clocks(self, m, platform, engine_hz):
        """One PLL from the 25 MHz oscillator: 50 MHz for the SDR core and the bridge (divisor
        17, -2.0 % baud error at 3 Mbaud: 48 MHz needs a 1 MHz phase detector, below the
        EHXPLLL's 3.125 MHz), the same shifted 90° for the SDRAM clock pin, and the engine's."""
        clk25 = platform.request("clk25", 0)
        pll, clks = self._pll(m, platform, 25e6, clk25.i, [
            PLLOutput("sdr", 50e6), PLLOutput("sdr_ps", 50e6, phase=90),
            PLLOutput("eng", engine_hz, tolerance=ENGINE_TOLERANCE)])
        self._dram_clk, self._dram_rst = clks["sdr"][0], ~pll.locked
        m.domains.sdr_ps = ClockDomain("sdr_ps", reset_less=True)
        m.d.comb += ClockSignal("sdr_ps").eq(clks["sdr_ps"][0])
        self._domain(m, platform, "bridge", clks["sdr"][0], clks["sdr"][1], ~pll.locked)
        self._domain(m, platform, "eng", clks["eng"][0], clks["eng"][1], ~pll.locked)
        return {"bridge": clks["sdr"][1], "eng": clks["eng"][1], "dram": 50e6}

    def dram(self, m, platform):
        gen = generate(self.name)
        platform.add_file(gen["verilog"].name, gen["verilog"].read_text())
        sdram = platform.request("sdram", 0, dir="-")
        # SDRAM clock: ODDRX1F sending 1 then 0 each cycle of the 90° clock.
        m.submodules.sdram_clk = clk = io.DDRBuffer("o", sdram.clk, o_domain="sdr_ps")
        m.d.comb += [clk.o[0].eq(1), clk.o[1].eq(0)]
        pads = {"sdram_a": sdram.a.io, "sdram_ba": sdram.ba.io, "sdram_cas_n": sdram.cas.io,
                "sdram_ras_n": sdram.ras.io, "sdram_we_n": sdram.we.io, "sdram_cs_n": sdram.cs.io,
                "sdram_cke": sdram.clk_en.io, "sdram_dm": sdram.dqm.io, "sdram_dq": sdram.dq.io}
        m.submodules.litedram = core = LiteDRAMCore(
            gen["name"], pads, addr_width=self.dram_addr_width, data_width=self.dram_data_width)
        m.d.comb += [core.clk_in.eq(self._dram_clk), core.rst_in.eq(self._dram_rst)]
        self._dram_domain(m, platform, core, None)  # user_clk is clk_sdr: constrained already
        return core

    def _dram_domain(self, m, platform, core, freq):
        """The ``dram`` domain on the core's ``user_clk``/``user_rst``; ``freq`` (Hz) constrains
        it on a kept net ``clk_dram`` (None: it is a net constrained elsewhere)."""
        m.domains.dram = ClockDomain("dram")
        clk = Signal(name="clk_dram", attrs={"keep": 1} if freq is not None else {})
        m.d.comb += [clk.eq(core.user_clk), ClockSignal("dram").eq(clk),
                     ResetSignal("dram").eq(core.user_rst)]
        if freq is not None:
            platform.add_clock_constraint(clk, freq)


class _ECPIX5(_ULX3S):
    def platform(self):
        return ECPIX585Platform()

    def leds(self, m, platform, *, seq, core):
        """RGB LED 0: green DRAM init done, blue the sequencer's done, red DRAM init error."""
        led = platform.request("rgb_led", 0)
        m.d.comb += [led.g.o.eq(core.init_done), led.b.o.eq(seq.irq),
                     led.r.o.eq(core.init_error)]

    def clocks(self, m, platform, engine_hz):
        """Our PLL from the 100 MHz oscillator: 48 MHz for the bridge (divisor 16, 0 % at
        3 Mbaud) and the engine's. LiteDRAM's DDR3 core has its own PLL (sys 75 MHz, sys2x,
        init 25 MHz) from the same oscillator."""
        clk100 = platform.request("clk100", 0).i
        rst = platform.request("rst", 0)
        self._dram_clk, self._dram_rst = clk100, rst.i
        pll, clks = self._pll(m, platform, 100e6, clk100, [
            PLLOutput("bridge", 48e6), PLLOutput("eng", engine_hz, tolerance=ENGINE_TOLERANCE)])
        m.d.comb += pll.reset.eq(rst.i)
        self._domain(m, platform, "bridge", *clks["bridge"], ~pll.locked)
        self._domain(m, platform, "eng", *clks["eng"], ~pll.locked)
        return {"bridge": clks["bridge"][1], "eng": clks["eng"][1], "dram": 75e6}

    def dram(self, m, platform):
        gen = generate(self.name)
        platform.add_file(gen["verilog"].name, gen["verilog"].read_text())
        ddr = platform.request("ddr3", 0, dir="-")
        pads = {"ddram_a": ddr.a.io, "ddram_ba": ddr.ba.io, "ddram_cas_n": ddr.cas.io,
                "ddram_ras_n": ddr.ras.io, "ddram_we_n": ddr.we.io, "ddram_cke": ddr.clk_en.io,
                "ddram_odt": ddr.odt.io, "ddram_dm": ddr.dm.io, "ddram_dq": ddr.dq.io,
                "ddram_dqs_p": ddr.dqs.p, "ddram_clk_p": ddr.clk.p}
        m.submodules.litedram = core = LiteDRAMCore(
            gen["name"], pads, addr_width=self.dram_addr_width, data_width=self.dram_data_width)
        m.d.comb += [core.clk_in.eq(self._dram_clk), core.rst_in.eq(self._dram_rst)]
        self._dram_domain(m, platform, core, 75e6)
        return core


ULX3S = _ULX3S("ulx3s", 1, 32 << 20, 25, 64)
ECPIX5 = _ECPIX5("ecpix5", 2, 512 << 20, 29, 128)
BOARDS = {b.name: b for b in (ULX3S, ECPIX5)}
