"""Requantization + activation, one output channel per lane (docs/fixed-point.md §4)."""

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["REQUANT_LATENCY", "RequantLane", "RequantUnit"]

#: Cycles from ``acc``/``valid`` in to ``y``/``valid`` out.
REQUANT_LATENCY = 2


class RequantLane(data.Struct):
    """One lane's input: accumulator and that output channel's requantization parameters."""

    acc: signed(32)
    m_pos: unsigned(16)
    m_neg: unsigned(16)
    shift: unsigned(6)


class RequantUnit(wiring.Component):
    """``lanes`` parallel requantizers, a fixed two-stage pipeline (no backpressure).

    Per lane, exactly :func:`model.golden.requantize`::

        p = acc * (m_neg if acc < 0 else m_pos)        # stage 1: 32 x 16 -> 48-bit signed
        y = clamp((p + 2**(shift-1)) >> shift, -128, 127)  # stage 2: round half up, saturate

    ``shift`` must be in [1, 47] (the quantizer guarantees it). ``valid_o`` follows ``valid_i``
    by :data:`REQUANT_LATENCY` cycles.

    Parameters
    ----------
    lanes : int
    """

    def __init__(self, lanes):
        self.lanes = lanes
        super().__init__({
            "valid_i": In(1),
            "lane": In(data.ArrayLayout(RequantLane, lanes)),
            "valid_o": Out(1),
            "y": Out(data.ArrayLayout(signed(8), lanes)),
        })

    def elaborate(self, platform):
        m = Module()
        valid1 = Signal()
        m.d.sync += [valid1.eq(self.valid_i), self.valid_o.eq(valid1)]
        for i in range(self.lanes):
            lane = self.lane[i]
            product = Signal(signed(49), name=f"product{i}")
            shift1 = Signal(6, name=f"shift{i}")
            mult = Mux(lane.acc < 0, lane.m_neg, lane.m_pos)
            m.d.sync += [product.eq(lane.acc * mult), shift1.eq(lane.shift)]
            # 2**(shift-1) < 2**47; the sum fits 49 bits signed (contract §4).
            rounded = Signal(signed(49), name=f"rounded{i}")
            half = Const(1, 48) << (shift1 - 1)[:6]
            m.d.comb += rounded.eq((product + half) >> shift1)
            m.d.sync += self.y[i].eq(Mux(rounded > 127, 127, Mux(rounded < -128, -128, rounded)))
        return m
