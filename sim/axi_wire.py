"""A wire-through AXI4 component: the test fixture that puts a master bus model (``m``) in front
of the DDR model (``s``) so both can be checked against each other in cocotb."""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Flow, In, Out

from hdl.axi import AXI4Signature

__all__ = ["AxiWire"]


class AxiWire(wiring.Component):
    """``m``: the master's side (driven by a cocotb master model); ``s``: the slave's side;
    ``cycles`` counts clocks since reset (for latency measurements)."""

    def __init__(self, *, addr_width=32, data_width=64):
        sig = AXI4Signature(addr_width=addr_width, data_width=data_width)
        super().__init__({"m": In(sig), "s": Out(sig), "cycles": Out(32)})

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.cycles.eq(self.cycles + 1)
        for name, member in self.s.signature.members.items():
            if member.flow == Flow.Out:  # master -> slave
                m.d.comb += getattr(self.s, name).eq(getattr(self.m, name))
            else:
                m.d.comb += getattr(self.m, name).eq(getattr(self.s, name))
        return m
