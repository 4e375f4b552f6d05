"""UART-to-Wishbone host bridge: frames from the host in, bus transactions, answers out.

The protocol is ``docs/bridge-protocol.md``; its constants come from :mod:`firmware.link`, the
host's encoder and decoder, so both sides share one definition. The blocks, each a
:class:`wiring.Component`, wired by :class:`BusBridge`::

    rx bytes ─► FrameDecoder ─► Request ──────────► BusMaster ─► Response ─► FrameEncoder ─► tx
                     │ payload words                 ▲  │ read words (FIFO) ───▲            bytes
                     └──► FIFO(max_burst) ───────────┘  └── Wishbone B4 classic master

:class:`BusBridge` works on byte streams (a simulation feeds it a byte per cycle);
:class:`UARTBridge` puts :class:`hdl.uart.UARTRx`/:class:`hdl.uart.UARTTx` in front of it.

A request is executed only after its CRC has checked: the decoder stores a write's payload in the
FIFO as it arrives and hands the request over at the end of the frame, with a status that says
whether to execute it; a rejected request's words are drained unexecuted. Every request that got
as far as its sequence number gets exactly one answer.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from firmware.link import (
    ANSWER_SYNC,
    ID_MAGIC,
    ID_WORDS,
    MAX_BURST,
    PROTOCOL_VERSION,
    REQUEST_SYNC,
    Cmd,
    Status,
)
from hdl.axi import WishboneSignature
from hdl.uart import MIN_DIVISOR, UARTRx, UARTTx

__all__ = [
    "BusBridge",
    "BusMaster",
    "FrameDecoder",
    "FrameEncoder",
    "Request",
    "Response",
    "UARTBridge",
    "crc16_update",
]


def crc16_update(crc, byte):
    """CRC-16/CCITT-FALSE register after one more byte, MSB first (poly 0x1021; init 0xFFFF is
    the caller's): eight unrolled shift-and-XOR steps, one byte per cycle. Same CRC as
    :func:`firmware.link.crc16`."""
    for i in range(8):
        feedback = crc[15] ^ byte[7 - i]
        crc = Cat(Const(0, 1), crc[:15]) ^ Mux(feedback, 0x1021, 0)
    return crc


class Request(data.Struct):
    """A whole, delimited request frame, handed from :class:`FrameDecoder` to :class:`BusMaster`.

    ``status`` is :class:`firmware.link.Status`: ACK means "execute it", anything else is the
    NACK to answer. ``pushed`` is how many payload words of this frame sit in the word FIFO (the
    bus master consumes exactly that many, executed or not).
    """

    cmd: 8
    seq: 8
    addr: 32  # byte address, as on the wire
    count: 16  # LEN
    status: 8
    pushed: 16


class Response(data.Struct):
    """What :class:`FrameEncoder` needs to send an answer: ``count`` words follow in the read-word
    stream when ``data`` is set (read commands, also after a bus fault)."""

    cmd: 8
    seq: 8
    status: 8
    count: 16
    data: 1


def _check(name, value, lo, hi):
    if not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {value!r}")


class FrameDecoder(wiring.Component):
    """Request frames in (bytes), :class:`Request` records and payload words out.

    Hunts for the sync byte (anything else between frames is skipped), reads the 8 header bytes,
    the payload if CMD is a write (stored only if LEN is valid for CMD, so at most ``max_burst``
    words), and the two CRC bytes; then checks, in this order, CRC (the register is 0 after the
    CRC bytes), command, length and address, and emits the request with the first failure as its
    status (ACK if none). If no byte arrives for ``rx_timeout`` cycles inside a frame the frame
    is dropped: with status TRUNCATED if CMD and SEQ had arrived (so it can be answered),
    silently otherwise. Then it hunts again, so no byte sequence wedges it.

    Parameters
    ----------
    max_burst : int
        Longest burst in words (the word FIFO must hold this many).
    addr_width : int
        Wishbone word-address width; a request must stay below ``4 << addr_width`` bytes.
    rx_timeout : int
        Idle cycles inside a frame before it is dropped.

    Attributes
    ----------
    i : In(stream.Signature(8))
        Bytes from the host. ``ready`` is low for one cycle after the header and while a
        request waits to be taken (under stop-and-wait nothing arrives then).
    o : Out(stream.Signature(Request))
    words : Out(stream.Signature(32))
        Payload words (little-endian bytes), into a FIFO of at least ``max_burst`` words.
    """

    def __init__(self, *, max_burst=MAX_BURST, addr_width=30, rx_timeout=1 << 20):
        _check("max_burst", max_burst, ID_WORDS, 0xFFFF)
        _check("addr_width", addr_width, 1, 30)
        _check("rx_timeout", rx_timeout, 2, 1 << 32)
        self.max_burst, self.addr_width, self.rx_timeout = max_burst, addr_width, rx_timeout
        super().__init__({
            "i": In(stream.Signature(8)),
            "o": Out(stream.Signature(Request)),
            "words": Out(stream.Signature(32)),
        })

    def _checks(self, hdr):
        """(known, writes, length ok, address ok) of a header (Struct view), as expressions."""
        cmd, n, addr, aw = hdr.cmd, hdr.count, hdr.addr, self.addr_width
        known = (cmd >= Cmd.ID) & (cmd <= Cmd.WRITE_BURST)
        writes = (cmd == Cmd.WRITE) | (cmd == Cmd.WRITE_BURST)
        single = (cmd == Cmd.READ) | (cmd == Cmd.WRITE)
        burst = (cmd == Cmd.READ_BURST) | (cmd == Cmd.WRITE_BURST)
        len_ok = (cmd == Cmd.ID) | (single & (n == 1)) | (burst & (n >= 1) & (n <= self.max_burst))
        end = addr[2:2 + aw] + n  # one past the last word: must not pass the top of the bus
        addr_ok = (addr[:2] == 0) & (end <= (1 << aw))
        if aw < 30:
            addr_ok &= addr[2 + aw:] == 0
        return known, writes, len_ok, (cmd == Cmd.ID) | addr_ok

    def elaborate(self, platform):
        m = Module()
        i, o = self.i, self.o
        hdr = Signal(data.StructLayout({"cmd": 8, "seq": 8, "addr": 32, "count": 16}))
        idx = Signal(range(9))  # header bytes received
        crc = Signal(16)
        acc = Signal(24)  # the first three bytes of a payload word
        lane = Signal(2)  # byte of the payload word
        left = Signal(16)  # payload words still to come
        store = Signal()  # LEN is valid: payload words go to the FIFO
        pushed = Signal(16)
        truncated = Signal()
        idle = Signal(range(self.rx_timeout + 1))  # cycles since the last byte, inside a frame
        crc_bytes = Signal()  # CRC bytes seen (0 or 1)
        known, writes, len_ok, addr_ok = self._checks(hdr)
        take = i.valid & i.ready
        next_crc = crc16_update(crc, i.payload)

        status = Signal(8)
        m.d.comb += status.eq(Mux(truncated, Status.TRUNCATED,
                              Mux(crc != 0, Status.BAD_CRC,
                              Mux(~known, Status.UNKNOWN_CMD,
                              Mux(~len_ok, Status.BAD_LENGTH,
                              Mux(~addr_ok, Status.BAD_ADDRESS, Status.ACK))))))
        m.d.comb += [
            o.payload.cmd.eq(hdr.cmd), o.payload.seq.eq(hdr.seq), o.payload.addr.eq(hdr.addr),
            o.payload.count.eq(hdr.count), o.payload.status.eq(status),
            o.payload.pushed.eq(pushed),
            self.words.payload.eq(Cat(acc, i.payload)),
        ]

        m.d.sync += idle.eq(Mux(take, 0, idle + 1))

        def receive_timeout():
            # Called last in every in-frame state, so its m.next wins: drop the frame, and answer
            # it if it can be named (CMD and SEQ arrived).
            with m.If((idle >= self.rx_timeout) & ~take):  # a byte in time continues the frame
                m.d.sync += truncated.eq(1)
                m.next = "HUNT"
                with m.If(idx >= 2):
                    m.next = "EMIT"

        with m.FSM():
            with m.State("HUNT"):
                m.d.comb += i.ready.eq(1)
                with m.If(i.valid & (i.payload == REQUEST_SYNC)):
                    m.d.sync += [crc.eq(0xFFFF), idx.eq(0), pushed.eq(0), truncated.eq(0),
                                 crc_bytes.eq(0)]
                    m.next = "HEADER"
            with m.State("HEADER"):
                m.d.comb += i.ready.eq(1)
                with m.If(i.valid):
                    m.d.sync += [hdr.as_value().word_select(idx[:3], 8).eq(i.payload),
                                 idx.eq(idx + 1), crc.eq(next_crc)]
                    with m.If(idx == 7):
                        m.next = "DECIDE"
                receive_timeout()
            with m.State("DECIDE"):  # the whole header is in `hdr` now
                m.d.sync += [left.eq(hdr.count), store.eq(len_ok), lane.eq(0)]
                m.next = "CRC"
                with m.If(writes & (hdr.count != 0)):
                    m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                last_lane = lane == 3
                m.d.comb += [i.ready.eq(~(last_lane & store) | self.words.ready),
                             self.words.valid.eq(i.valid & last_lane & store)]
                with m.If(take):
                    m.d.sync += [crc.eq(next_crc), lane.eq(lane + 1)]
                    with m.If(last_lane):
                        m.d.sync += [left.eq(left - 1), pushed.eq(pushed + store)]
                        with m.If(left == 1):
                            m.next = "CRC"
                    with m.Else():
                        m.d.sync += acc.word_select(lane, 8).eq(i.payload)
                receive_timeout()
            with m.State("CRC"):
                m.d.comb += i.ready.eq(1)
                with m.If(i.valid):
                    m.d.sync += [crc.eq(next_crc), crc_bytes.eq(1)]
                    with m.If(crc_bytes):
                        m.next = "EMIT"
                receive_timeout()
            with m.State("EMIT"):
                m.d.comb += o.valid.eq(1)
                with m.If(o.ready):
                    m.next = "HUNT"
        return m


class BusMaster(wiring.Component):
    """Executes :class:`Request` records on a Wishbone B4 classic master; one :class:`Response`
    per request, read data into an internal FIFO of ``max_burst`` words.

    A burst is one block cycle (Ref: Wishbone B4 3.4): CYC_O stays high for the whole burst and
    STB_O for each word until its ACK_I or ERR_I; the address and data are registered and change
    only after a termination (B4 3.1.3, master holds its signals during a phase). ``bus_err`` is
    ERR_I (B4 3.1.3.1): our :class:`hdl.axi.WishboneSignature` has no ERR member, so it is a
    separate input the board top ties to its address decoder (0 if the bus cannot fail). A word
    that gets neither within ``bus_timeout`` cycles aborts the burst: CYC_O and STB_O drop, which
    terminates the cycle for any B4 slave (3.1.3: a slave ignores STB_O without CYC_O), and the
    answer is BUS_TIMEOUT. A fault stops the burst at word ``count``; the words before it are
    done (and, for reads, answered).

    Parameters
    ----------
    max_burst, addr_width : int
        As :class:`FrameDecoder`.
    bus_timeout : int
        Cycles STB_O may wait for ACK_I/ERR_I.
    board : int
        The 32-bit board word of the ID answer (chosen by the board top).

    Attributes
    ----------
    i : In(stream.Signature(Request))
    words : In(stream.Signature(32))
        Payload words from the decoder's FIFO; ``Request.pushed`` of them per request.
    o : Out(stream.Signature(Response))
    rdata : Out(stream.Signature(32))
        Read words, ``Response.count`` per read answer, from the internal FIFO.
    bus : Out(WishboneSignature(addr_width, 32))
    bus_err : In(1)
    """

    def __init__(self, *, max_burst=MAX_BURST, addr_width=30, bus_timeout=1024, board=0):
        _check("max_burst", max_burst, ID_WORDS, 0xFFFF)
        _check("addr_width", addr_width, 1, 30)
        _check("bus_timeout", bus_timeout, 2, 1 << 32)
        _check("board", board, 0, 0xFFFF_FFFF)
        self.max_burst, self.addr_width = max_burst, addr_width
        self.bus_timeout, self.board = bus_timeout, board
        super().__init__({
            "i": In(stream.Signature(Request)),
            "words": In(stream.Signature(32)),
            "o": Out(stream.Signature(Response)),
            "rdata": Out(stream.Signature(32)),
            "bus": Out(WishboneSignature(addr_width=addr_width, data_width=32)),
            "bus_err": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        bus, req = self.bus, Signal(Request)
        m.submodules.rfifo = rfifo = SyncFIFOBuffered(width=32, depth=self.max_burst)
        wiring.connect(m, rfifo.r_stream, wiring.flipped(self.rdata))
        adr = Signal(self.addr_width)
        done = Signal(16)  # words completed
        drain = Signal(16)  # payload words of this request still in the word FIFO
        status = Signal(8)
        wait = Signal(range(self.bus_timeout + 1))  # cycles of the current STB_O phase
        id_words = Array(Const(w, 32) for w in (
            ID_MAGIC, PROTOCOL_VERSION | self.max_burst << 16, self.board))

        m.d.comb += [
            bus.adr.eq(adr), bus.dat_w.eq(self.words.payload), rfifo.w_data.eq(bus.dat_r),
            self.o.payload.cmd.eq(req.cmd), self.o.payload.seq.eq(req.seq),
            self.o.payload.status.eq(status), self.o.payload.count.eq(done),
            self.o.payload.data.eq((req.cmd == Cmd.ID) | (req.cmd == Cmd.READ)
                                   | (req.cmd == Cmd.READ_BURST)),
        ]
        ack = bus.cyc & bus.stb & bus.ack
        err = bus.cyc & bus.stb & self.bus_err & ~bus.ack
        m.d.sync += wait.eq(Mux(bus.stb & ~ack & ~err, wait + 1, 0))
        timeout = wait == self.bus_timeout - 1

        def bus_phase():
            # Termination of the current word (B4 3.1.3): next word, last word, or a fault.
            with m.If(ack):
                m.d.sync += [adr.eq(adr + 1), done.eq(done + 1)]
                with m.If(done + 1 == req.count):
                    m.next = "RESPOND"
            with m.Elif(err | timeout):
                m.d.sync += status.eq(Mux(err, Status.BUS_ERROR, Status.BUS_TIMEOUT))
                m.next = "DRAIN"

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    p = self.i.payload
                    m.d.sync += [req.eq(p), adr.eq(p.addr[2:]), done.eq(0), drain.eq(p.pushed),
                                 status.eq(p.status)]
                    with m.If(p.status != Status.ACK):
                        m.next = "DRAIN"
                    with m.Elif(p.cmd == Cmd.ID):
                        m.next = "ID"
                    with m.Elif((p.cmd == Cmd.WRITE) | (p.cmd == Cmd.WRITE_BURST)):
                        m.next = "WRITE"
                    with m.Else():
                        m.next = "READ"
            with m.State("ID"):
                m.d.comb += [rfifo.w_en.eq(1), rfifo.w_data.eq(id_words[done[:2]])]
                with m.If(rfifo.w_rdy):
                    m.d.sync += done.eq(done + 1)
                    with m.If(done == ID_WORDS - 1):
                        m.next = "RESPOND"
            with m.State("WRITE"):
                # The whole payload is in the FIFO (pushed before the request), so `valid` is
                # high here and STB_O never drops before a termination.
                m.d.comb += [bus.cyc.eq(1), bus.stb.eq(self.words.valid), bus.we.eq(1),
                             self.words.ready.eq(ack)]
                with m.If(ack):
                    m.d.sync += drain.eq(drain - 1)
                bus_phase()
            with m.State("READ"):
                # STB_O only with room for the word: it drops only after a termination, since
                # only our own writes fill the FIFO.
                m.d.comb += [bus.cyc.eq(1), bus.stb.eq(rfifo.w_rdy), rfifo.w_en.eq(ack)]
                bus_phase()
            with m.State("DRAIN"):
                m.d.comb += self.words.ready.eq(drain != 0)
                with m.If(drain == 0):
                    m.next = "RESPOND"
                with m.Elif(self.words.valid):
                    m.d.sync += drain.eq(drain - 1)
            with m.State("RESPOND"):
                m.d.comb += self.o.valid.eq(1)
                with m.If(self.o.ready):
                    m.next = "IDLE"
        return m


class FrameEncoder(wiring.Component):
    """:class:`Response` records (and their read words) in, answer frames out (bytes).

    Sends the sync byte, CMD, SEQ, STATUS, COUNT (little-endian), ``count`` words little-endian
    if ``data``, then the CRC-16/CCITT-FALSE of everything after the sync byte, MSB first.

    Attributes
    ----------
    i : In(stream.Signature(Response))
    words : In(stream.Signature(32))
    o : Out(stream.Signature(8))
    """

    i: In(stream.Signature(Response))
    words: In(stream.Signature(32))
    o: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        o, resp = self.o, Signal(Response)
        idx = Signal(range(6))
        lane = Signal(2)
        left = Signal(16)
        crc = Signal(16)
        sent = o.valid & o.ready
        header = Array([Const(ANSWER_SYNC, 8), resp.cmd, resp.seq, resp.status,
                        resp.count[:8], resp.count[8:]])
        next_crc = crc16_update(crc, o.payload)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [resp.eq(self.i.payload), idx.eq(0), lane.eq(0),
                                 left.eq(self.i.payload.count), crc.eq(0xFFFF)]
                    m.next = "HEADER"
            with m.State("HEADER"):
                m.d.comb += [o.valid.eq(1), o.payload.eq(header[idx])]
                with m.If(o.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx != 0):  # the sync byte is not covered
                        m.d.sync += crc.eq(next_crc)
                    with m.If(idx == 5):
                        m.next = "CRC_HI"
                        with m.If(resp.data & (resp.count != 0)):
                            m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                m.d.comb += [o.valid.eq(self.words.valid),
                             o.payload.eq(self.words.payload.word_select(lane, 8)),
                             self.words.ready.eq(o.ready & (lane == 3))]
                with m.If(sent):
                    m.d.sync += [lane.eq(lane + 1), crc.eq(next_crc)]
                    with m.If(lane == 3):
                        m.d.sync += left.eq(left - 1)
                        with m.If(left == 1):
                            m.next = "CRC_HI"
            with m.State("CRC_HI"):
                m.d.comb += [o.valid.eq(1), o.payload.eq(crc[8:])]
                with m.If(o.ready):
                    m.next = "CRC_LO"
            with m.State("CRC_LO"):
                m.d.comb += [o.valid.eq(1), o.payload.eq(crc[:8])]
                with m.If(o.ready):
                    m.next = "IDLE"
        return m


class BusBridge(wiring.Component):
    """The bridge on byte streams: decoder, payload FIFO, bus master, encoder (the diagram in
    this module's docstring). A simulation feeds ``rx`` a byte per cycle.

    Parameters
    ----------
    max_burst : int
        Words per burst at most (the FIFOs' depth; 256 = one 8 Kbit block RAM each).
    addr_width : int
        Wishbone word-address width (30 covers the 4 GB byte space of the protocol).
    rx_timeout : int
        Idle cycles inside a frame before it is dropped (make it longer than any gap the host's
        USB-serial adapter can leave inside a frame: about 10 ms).
    bus_timeout : int
        Cycles a word may wait for ACK_I/ERR_I.
    board : int
        The ID answer's board word.

    Attributes
    ----------
    rx : In(stream.Signature(8))
        Bytes from the host (``ready`` may drop briefly: behind a UART, see :class:`UARTBridge`).
    tx : Out(stream.Signature(8))
        Answer bytes.
    bus : Out(WishboneSignature(addr_width, 32))
        Wishbone B4 classic master, 32-bit data, word addresses.
    bus_err : In(1)
        ERR_I of the bus (tie to 0 if nothing can fail).
    """

    def __init__(self, *, max_burst=MAX_BURST, addr_width=30, rx_timeout=1 << 20,
                 bus_timeout=1024, board=0):
        _check("max_burst", max_burst, ID_WORDS, 0xFFFF)
        _check("addr_width", addr_width, 1, 30)
        _check("rx_timeout", rx_timeout, 2, 1 << 32)
        _check("bus_timeout", bus_timeout, 2, 1 << 32)
        _check("board", board, 0, 0xFFFF_FFFF)
        self.max_burst, self.addr_width, self.rx_timeout = max_burst, addr_width, rx_timeout
        self.bus_timeout, self.board = bus_timeout, board
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "bus": Out(WishboneSignature(addr_width=addr_width, data_width=32)),
            "bus_err": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.decoder = decoder = FrameDecoder(
            max_burst=self.max_burst, addr_width=self.addr_width, rx_timeout=self.rx_timeout)
        m.submodules.wfifo = wfifo = SyncFIFOBuffered(width=32, depth=self.max_burst)
        m.submodules.master = master = BusMaster(
            max_burst=self.max_burst, addr_width=self.addr_width, bus_timeout=self.bus_timeout,
            board=self.board)
        m.submodules.encoder = encoder = FrameEncoder()
        wiring.connect(m, wiring.flipped(self.rx), decoder.i)
        wiring.connect(m, decoder.words, wfifo.w_stream)
        wiring.connect(m, wfifo.r_stream, master.words)
        wiring.connect(m, decoder.o, master.i)
        wiring.connect(m, master.o, encoder.i)
        wiring.connect(m, master.rdata, encoder.words)
        wiring.connect(m, encoder.o, wiring.flipped(self.tx))
        wiring.connect(m, master.bus, wiring.flipped(self.bus))
        m.d.comb += master.bus_err.eq(self.bus_err)
        return m


class UARTBridge(wiring.Component):
    """:class:`BusBridge` behind an 8N1 UART: what the board top instantiates.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (:mod:`hdl.uart`): ``round(f_clk / baud)``, e.g. 16 for 3 Mbaud at
        48 MHz.
    **kwargs
        As :class:`BusBridge`.

    Attributes
    ----------
    rx : In(1)
        Serial input pin (from the host's TXD), idle high; synchronised inside.
    tx : Out(1)
        Serial output pin (to the host's RXD), idle high, registered.
    bus, bus_err
        As :class:`BusBridge`.
    frame_error, overrun : Out(1)
        Pulses from the receiver (:class:`hdl.uart.UARTRx`), for counters or LEDs.
    """

    def __init__(self, *, divisor, **kwargs):
        _check("divisor", divisor, MIN_DIVISOR, 1 << 32)
        self.divisor = divisor
        self._bridge = BusBridge(**kwargs)  # last: checks its arguments
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "bus": Out(WishboneSignature(addr_width=self._bridge.addr_width, data_width=32)),
            "bus_err": In(1),
            "frame_error": Out(1),
            "overrun": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = urx = UARTRx(self.divisor)
        m.submodules.uart_tx = utx = UARTTx(self.divisor)
        m.submodules.bridge = bridge = self._bridge
        wiring.connect(m, urx.o, bridge.rx)
        wiring.connect(m, bridge.tx, utx.i)
        wiring.connect(m, bridge.bus, wiring.flipped(self.bus))
        m.d.comb += [
            urx.rx.eq(self.rx), self.tx.eq(utx.tx), bridge.bus_err.eq(self.bus_err),
            self.frame_error.eq(urx.frame_error), self.overrun.eq(urx.overrun),
        ]
        return m
