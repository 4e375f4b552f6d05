"""The MAC array: ``p_oc`` int8 dot products of ``p_ic`` lanes per cycle, fully pipelined."""

from amaranth import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hdl.dsp import MULT_LATENCY, Multiplier
from hdl.fanout import Replicated

__all__ = ["OPERAND_LATENCY", "MacArray", "mac_latency"]

#: Cycles from ``x`` to the multipliers' ports: one register per output channel.
OPERAND_LATENCY = 1


def mac_latency(p_ic):
    """Cycles from ``x`` in to ``sums`` out: the operand copies, the multipliers, then one
    register per level of the adder tree."""
    return OPERAND_LATENCY + MULT_LATENCY + (p_ic - 1).bit_length()


class MacArray(wiring.Component):
    """``sums[o] = Σ_i w[o][i] · x[i]`` for ``o < p_oc``, one set per cycle (no backpressure).

    Every product has its own :class:`~hdl.dsp.Multiplier` (one MULT18X18D: nextpnr-ecp5 has no
    MULT9X9D, so two int8 products never share a slice). The weights live in the multipliers'
    B input registers, taken from ``w`` in cycles with ``w_load`` high: a weight set stays for a
    whole pass, so it needs no fabric register beside the slices. The operands reach the
    multipliers through a register per output channel (:class:`~hdl.fanout.Replicated`), placed
    beside that channel's slices: ``x`` goes to all ``p_ic · p_oc`` slices, which fill the three
    DSP rows of the ECP5-85F (:mod:`hdl.floorplan`), and one register driving them all was
    15 ns of routing. The ``p_ic`` products of an output
    channel are summed by a binary adder tree with a register after every level: one carry chain
    of at most ``16 + levels`` bits per cycle. Results are exact: the sum width grows one bit per
    level (|product| ≤ 2**14, so ``p_ic`` of them fit ``16 + levels`` bits signed).

    Parameters
    ----------
    p_ic, p_oc : int

    Attributes
    ----------
    x : In(ArrayLayout(signed(8), p_ic))
        Input lanes.
    w : In(ArrayLayout(ArrayLayout(signed(8), p_ic), p_oc))
        Weights, ``w[o][i]``.
    w_load : In(ArrayLayout(1, p_oc))
        Bit ``o``: output channel ``o`` takes ``w[o]`` at the end of this cycle, and multiplies
        by it the ``x`` presented in the cycle before (:data:`OPERAND_LATENCY`) and after (one
        bit per channel: the load drives the clock enables of every multiplier, so its driver
        comes in copies).
    sums : Out(ArrayLayout(signed(16 + levels), p_oc))
        The dot products of the ``x`` presented :func:`mac_latency` cycles earlier and the
        weights taken up to the cycle after it.
    """

    def __init__(self, p_ic, p_oc):
        for name, value in (("p_ic", p_ic), ("p_oc", p_oc)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        self.p_ic, self.p_oc = p_ic, p_oc
        self.levels = (p_ic - 1).bit_length()
        super().__init__({
            "x": In(data.ArrayLayout(signed(8), p_ic)),
            "w": In(data.ArrayLayout(data.ArrayLayout(signed(8), p_ic), p_oc)),
            "w_load": In(data.ArrayLayout(1, p_oc)),
            "sums": Out(data.ArrayLayout(signed(16 + self.levels), p_oc)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.x = x = Replicated(self.p_oc, width=8 * self.p_ic)
        m.d.comb += x.i.eq(self.x)
        for o in range(self.p_oc):
            terms = []
            x_o = x.o[o]
            for i in range(self.p_ic):
                mult = Multiplier(8, 8, b_hold=True)
                m.submodules[f"mult_{o}_{i}"] = mult
                m.d.comb += [mult.a.eq(x_o[8 * i:8 * i + 8]), mult.b.eq(self.w[o][i]),
                             mult.b_en.eq(self.w_load[o])]
                terms.append(mult.p)
            # Adder tree: level k adds pairs into registers one bit wider; an odd term out
            # is delayed by one register so every path has the same latency. The last level's
            # register is the output itself.
            for level in range(self.levels):
                nxt = []
                for j in range(0, len(terms), 2):
                    s = (self.sums[o] if level == self.levels - 1 else
                         Signal(signed(17 + level), name=f"sum_{o}_l{level}_{j // 2}",
                                reset_less=True))
                    pair = terms[j] + terms[j + 1] if j + 1 < len(terms) else terms[j]
                    m.d.sync += s.eq(pair)
                    nxt.append(s)
                terms = nxt
            if not self.levels:
                m.d.comb += self.sums[o].eq(terms[0])
        return m
