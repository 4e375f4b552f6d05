"""Block RAM with a registered output, whose users never read a word in the cycle it is written."""

from amaranth import Module, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["BRAM_READ_LATENCY", "BlockRAM"]

#: Cycles from ``rd_addr`` to ``rd_data`` of a :class:`BlockRAM`: the block RAM's read register,
#: then the output register.
BRAM_READ_LATENCY = 2


class BlockRAM(wiring.Component):
    """``depth`` words of ``shape``: one write port and one read port of
    :data:`BRAM_READ_LATENCY` cycles (the block RAM's own read, then a register).

    Why the output register: a DP16KD without its output register (``REGMODE_B = "NOREG"``, all
    that yosys's ``memory_libmap`` maps to) delivers its word 5.83 ns after the clock edge on the
    ECP5-85F, speed 6 (nextpnr's timing model; 0.96 ns with ``"OUTREG"``). Whatever logic and
    routing follows a block RAM then has 4 ns at 100 MHz; the register in front of it takes the
    word first and leaves the next stage the whole cycle. The register has no reset and no
    logic in front of it, so that it is the block RAM's own output register after synthesis:
    :func:`hdl.ecp5.absorb_bram_output_registers` moves it there (``OUTREG``) in the netlist
    that ``hdl.timing`` and ``make bitstream`` place and route.

    No collision emulation: a read port without ``transparent_for`` returns the old word on a
    same-cycle write in the simulator, and the DP16KD makes no promise across its two ports, so
    yosys emulates the old word with a compare of the addresses and a bypass register and mux on
    every data bit: for a 1024 × 512 accumulator bank, 531 LUTs and 1,036 flip-flops between the
    block RAMs and their loads, where routing is scarcest. The ``no_rw_check`` attribute tells
    yosys that a collision's result is never used, so the memory maps to block RAMs alone (Ref:
    yosys ``memory_libmap``, ``synth_lattice -no-rw-check``). Each user states in its own
    docstring why it never uses a colliding read.

    Parameters
    ----------
    shape : ShapeLike
    depth : int
    read_enable : bool
        With ``rd_en``: both read stages advance only while it is high (a stalled pipeline
        keeps its words). Without, they advance every cycle.

    Attributes
    ----------
    wr_addr : In(range(depth))
    wr_data : In(shape)
    wr_en : In(1)
    rd_addr : In(range(depth))
    rd_en : In(1), only with ``read_enable``
    rd_data : Out(shape)
        The word at ``rd_addr`` of :data:`BRAM_READ_LATENCY` (enabled) cycles before.
    """

    def __init__(self, shape, depth, *, read_enable=False):
        self.shape, self.depth, self.read_enable = shape, depth, read_enable
        ports = {"wr_addr": In(range(depth)), "wr_data": In(shape), "wr_en": In(1),
                 "rd_addr": In(range(depth)), "rd_data": Out(shape)}
        if read_enable:
            ports["rd_en"] = In(1)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=self.shape, depth=self.depth, init=[],
                                               attrs={"no_rw_check": 1})
        wr, rd = mem.write_port(), mem.read_port()
        out = Signal(self.shape, reset_less=True)
        m.d.comb += [wr.addr.eq(self.wr_addr), wr.data.eq(self.wr_data), wr.en.eq(self.wr_en),
                     rd.addr.eq(self.rd_addr), self.rd_data.eq(out)]
        if self.read_enable:
            m.d.comb += rd.en.eq(self.rd_en)
            with m.If(self.rd_en):
                m.d.sync += out.eq(rd.data)
        else:
            m.d.sync += out.eq(rd.data)
        return m
