"""Requantization + activation, one output channel per lane (docs/fixed-point.md §4)."""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hdl.dsp import MULT_LATENCY, Multiplier

__all__ = ["REQUANT_LATENCY", "RequantLane", "RequantUnit"]

#: Cycles from ``acc``/``valid`` in to ``y``/``valid`` out.
REQUANT_LATENCY = 1 + MULT_LATENCY + 5


class RequantLane(data.Struct):
    """One lane's input: accumulator and that output channel's requantization parameters."""

    acc: signed(32)
    m_pos: unsigned(16)
    m_neg: unsigned(16)
    shift: unsigned(6)


class RequantUnit(wiring.Component):
    """``lanes`` parallel requantizers, a fixed pipeline of :data:`REQUANT_LATENCY` stages (no
    backpressure).

    Per lane, exactly :func:`model.golden.requantize`::

        p = acc * (m_neg if acc < 0 else m_pos)            # 32 x 16 -> 48-bit signed
        y = clamp((p + 2**(shift-1)) >> shift, -128, 127)  # round half up, saturate

    The 32 × 16 product is two 18 × 18 multipliers (one MULT18X18D each, :class:`Multiplier`):
    ``acc = hi · 2**16 + lo`` with ``lo`` the unsigned low half, so ``p = (hi · m << 16) + lo · m``
    and both partial products fit the slice's signed 18-bit operands. Every stage is one carry
    chain or one mux level (the unpipelined form — 49-bit add, variable shift and clamp in one
    cycle — was the engine's critical path):

    1. register the accumulator halves and pick the multiplier by the sign;
    2. the two partial products (:data:`~hdl.dsp.MULT_LATENCY` registered stages);
    3. ``p = (p_hi << 16) + p_lo``, and the rounding constant ``2**(shift-1)`` beside it;
    4. ``p + 2**(shift-1)``;
    5. arithmetic shift by ``shift & ~7`` (whole bytes);
    6. arithmetic shift by ``shift & 7``;
    7. saturate to int8.

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
        valid = self.valid_i
        for _ in range(REQUANT_LATENCY):
            valid_q = Signal()
            m.d.sync += valid_q.eq(valid)
            valid = valid_q
        m.d.comb += self.valid_o.eq(valid)
        for i in range(self.lanes):
            self._lane(m, i)
        return m

    def _lane(self, m, i):
        lane = self.lane[i]
        # stage 1: split the accumulator, choose the slope by its sign
        lo = Signal(unsigned(16), name=f"lo{i}", reset_less=True)
        hi = Signal(signed(16), name=f"hi{i}", reset_less=True)
        mult = Signal(unsigned(16), name=f"mult{i}", reset_less=True)
        shift = Signal(6, name=f"shift{i}_s1", reset_less=True)
        m.d.sync += [lo.eq(lane.acc[:16]), hi.eq(lane.acc[16:]),
                     mult.eq(Mux(lane.acc < 0, lane.m_neg, lane.m_pos)), shift.eq(lane.shift)]
        # stage 2: partial products; operands widened by a zero bit are non-negative
        m.submodules[f"mul_lo{i}"] = mul_lo = Multiplier(17, 17)
        m.submodules[f"mul_hi{i}"] = mul_hi = Multiplier(16, 17)
        m.d.comb += [mul_lo.a.eq(Cat(lo, Const(0, 1))), mul_lo.b.eq(Cat(mult, Const(0, 1))),
                     mul_hi.a.eq(hi), mul_hi.b.eq(Cat(mult, Const(0, 1)))]
        for stage in range(MULT_LATENCY):
            shift_q = Signal(6, name=f"shift{i}_m{stage}", reset_less=True)
            m.d.sync += shift_q.eq(shift)
            shift = shift_q
        # stage 3: the 48-bit product; 2**(shift-1) < 2**47 and |p| < 2**47, so p + half fits
        # 49 bits signed (contract §4)
        product = Signal(signed(49), name=f"product{i}", reset_less=True)
        half = Signal(unsigned(47), name=f"half{i}", reset_less=True)
        shift3 = Signal(6, name=f"shift{i}_s3", reset_less=True)
        m.d.sync += [product.eq((mul_hi.p << 16) + mul_lo.p),
                     half.eq(Const(1, 47) << (shift - 1)[:6]), shift3.eq(shift)]
        # stage 4: round half up
        rounded = Signal(signed(49), name=f"rounded{i}", reset_less=True)
        shift4 = Signal(6, name=f"shift{i}_s4", reset_less=True)
        m.d.sync += [rounded.eq(product + half), shift4.eq(shift3)]
        # stages 5 and 6: the arithmetic shift, whole bytes first
        coarse = Signal(signed(49), name=f"coarse{i}", reset_less=True)
        fine_shift = Signal(3, name=f"shift{i}_s5", reset_less=True)
        m.d.sync += [coarse.eq(rounded >> Cat(Const(0, 3), shift4[3:])),
                     fine_shift.eq(shift4[:3])]
        shifted = Signal(signed(49), name=f"shifted{i}", reset_less=True)
        m.d.sync += shifted.eq(coarse >> fine_shift)
        # stage 7: saturate
        m.d.sync += self.y[i].eq(Mux(shifted > 127, 127, Mux(shifted < -128, -128, shifted)))
