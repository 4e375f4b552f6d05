"""A progress watchdog: a down-counter reloaded by every sign of progress.

The sequencer (``hdl/sequencer.py``, ``docs/sequencer.md``, Watchdog) feeds it every handshake
of its AXI4 master and every Wishbone acknowledge of its engine port; when none has come for
``limit`` cycles, ``expired`` pulses and the sequencer stops the layer.
"""

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Watchdog"]


class Watchdog(wiring.Component):
    """Pulses ``expired`` after ``limit`` cycles of ``run`` without a ``kick``.

    Timing: ``kick`` is registered on entry, so the bus handshakes that make it reach one
    flip-flop only; the counter is a plain down-counter whose reload mux is driven by registers;
    the compare (``count == 1``) is registered into ``expired``. So ``expired`` is high
    ``limit`` cycles after ``run`` rose, or ``limit + 1`` cycles after the cycle of the last kick
    (``tests/test_hdl_watchdog.py``).

    Ports
    -----
    limit : In(32)
        Cycles without progress before ``expired``; 0 turns the watchdog off. Sampled at each
        reload (while ``run`` is low, at each kick, at expiry): a change while running takes
        effect at the next reload.
    run : In(1)
        Count while high; while low the counter holds ``limit``.
    kick : In(1)
        Progress in this cycle (any number of events): reload.
    expired : Out(1)
        One-cycle pulse; the counter then reloads, so with no progress at all it pulses again
        every ``limit + 1`` cycles.
    """

    limit: In(32)
    run: In(1)
    kick: In(1)
    expired: Out(1)

    def elaborate(self, platform):
        m = Module()
        kicked = Signal()  # stage 1: the handshakes' OR, off the counter's path
        count = Signal(32)
        m.d.sync += kicked.eq(self.kick)
        with m.If(~self.run | kicked | self.expired):
            m.d.sync += count.eq(self.limit)
        with m.Else():
            m.d.sync += count.eq(count - 1)
        # stage 2: registered compare (the counter is 0, not 1, in the cycle after it fired).
        m.d.sync += self.expired.eq(self.run & ~kicked & (count == 1) & (self.limit != 0))
        return m
