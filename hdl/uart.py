"""8N1 UART receiver and transmitter with an integer clock divisor, on byte streams.

Our own small ones (amaranth-stdio is not on PyPI). A bit lasts ``divisor`` clock cycles: 16 for
3 Mbaud at 48 MHz, 17 for 3 Mbaud at 50 MHz (-2.0 % baud error); the receiver samples each bit
once, in its middle, so the baud error it tolerates is what is left of half a bit after the
synchroniser and the divisor's rounding over the 9.5 bits from the start edge to the stop bit
(``docs/bridge-protocol.md``, "Physical layer": ``tests/test_bridge.py`` measures it).

Byte streams carry a bare 8-bit payload (a byte is all there is to name); ``valid`` never waits
on ``ready``.
"""

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["MIN_DIVISOR", "UARTRx", "UARTTx"]

#: The smallest divisor the receiver accepts: the start bit must still have a middle after the
#: synchroniser's two cycles of latency jitter and the one-cycle edge detection.
MIN_DIVISOR = 4


def _check_divisor(divisor):
    if not isinstance(divisor, int) or divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be an integer of at least {MIN_DIVISOR} clock cycles "
                         f"per bit, not {divisor!r}")


class UARTRx(wiring.Component):
    """8N1 receiver: start bit (0), 8 data bits LSB first, one stop bit (1).

    The ``rx`` pin goes through a 2-FF synchroniser (:class:`amaranth.lib.cdc.FFSynchronizer`)
    first: it is asynchronous to our clock. A falling edge starts a byte; the start bit is checked
    again half a bit later (a shorter glitch is ignored), then each bit is sampled one bit time
    after the previous one. A byte whose stop bit is 0 is dropped with a ``frame_error`` pulse and
    the receiver waits for the line to go high again (a break is not read as a stream of bytes).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.

    Attributes
    ----------
    rx : In(1)
        The serial input pin (idle high).
    o : Out(stream.Signature(8))
        Received bytes. ``valid`` stays high until ``ready``; a byte completed while the previous
        one is still waiting is dropped with an ``overrun`` pulse (a UART has no flow control).
    frame_error, overrun : Out(1)
        One-cycle pulses, for counters.
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    frame_error: Out(1)
    overrun: Out(1)

    def __init__(self, divisor):
        _check_divisor(divisor)
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)  # 2 FFs against metastability
        timer = Signal(range(d))
        bit = Signal(range(8))
        shreg = Signal(8)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        m.d.sync += [self.frame_error.eq(0), self.overrun.eq(0)]
        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    # The edge is seen 0 to 1 cycles late; d // 2 more cycles reach mid-bit.
                    m.d.sync += timer.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(d - 1), bit.eq(0)]
                    m.next = "DATA"
                    with m.If(rx):  # a glitch, not a start bit
                        m.next = "IDLE"
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), bit.eq(bit + 1), timer.eq(d - 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(~rx):
                        m.d.sync += self.frame_error.eq(1)
                        m.next = "BREAK"
                    with m.Else():
                        # Back to IDLE at mid stop bit: the next start edge may come early.
                        with m.If(self.o.valid & ~self.o.ready):
                            m.d.sync += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(shreg)]
                        m.next = "IDLE"
            with m.State("BREAK"):
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """8N1 transmitter: one byte from ``i`` every ``10 · divisor`` cycles at most.

    ``tx`` is driven from a register (no glitches on the pin). ``i.ready`` is high while idle and
    in the last cycle of a stop bit, so bytes offered in time go out back to back.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.

    Attributes
    ----------
    i : In(stream.Signature(8))
        Bytes to send.
    tx : Out(1)
        The serial output pin (idle high).
    """

    i: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, divisor):
        _check_divisor(divisor)
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        timer = Signal(range(d))
        left = Signal(range(11))  # bit times left, start bit included
        shreg = Signal(9)  # the data bits still to send, then the stop bit

        # Ready while idle and in the last cycle of a stop bit, so that bytes go back to back.
        free = (left == 0) | ((left == 1) & (timer == 0))
        m.d.comb += self.i.ready.eq(free)
        with m.If(free & self.i.valid):
            m.d.sync += [self.tx.eq(0), shreg.eq(Cat(self.i.payload, 1)), left.eq(10),
                         timer.eq(d - 1)]
        with m.Elif(left != 0):
            with m.If(timer == 0):
                m.d.sync += [self.tx.eq(shreg[0]), shreg.eq(Cat(shreg[1:], 1)),
                             left.eq(left - 1), timer.eq(d - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m
