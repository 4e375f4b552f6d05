"""Bus signatures (AXI4 master, Wishbone CSR slave) and the AXI read-address arbiter.

Members are named exactly as the specifications name the signals (lower case), so the Verilog ports
read ``axi__arvalid`` etc. and cocotb bus models find them by name.
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "RESP_DECERR",
    "RESP_OKAY",
    "RESP_SLVERR",
    "BURST_PLAN_LATENCY",
    "WISHBONE_SLICE_LATENCY",
    "AXI4Signature",
    "BurstPlanner",
    "ReadArbiter",
    "ReadRequestSignature",
    "WishboneRegisterSlice",
    "WishboneSignature",
]

# Ref: AMBA AXI4 spec A3.4.4 (RRESP/BRESP encoding).
RESP_OKAY, RESP_SLVERR, RESP_DECERR = 0b00, 0b10, 0b11


class AXI4Signature(wiring.Signature):
    """AXI4 master interface (Ref: AMBA AXI and ACE Protocol Specification, IHI0022, part A).

    Only the signals this engine drives or samples are present; the omitted ones take the defaults
    of spec A10.3 on the slave side (AWLOCK/ARLOCK=0, AWCACHE/ARCACHE=0b0011, AWPROT/ARPROT=0,
    AWQOS/ARQOS=0, AWBURST/ARBURST=INCR, AWSIZE/ARSIZE = data width).

    Members (master's view; spec names upper case):

    - ``awid, awaddr, awlen, awsize, awburst, awvalid`` out, ``awready`` in: write address channel.
    - ``wdata, wstrb, wlast, wvalid`` out, ``wready`` in: write data channel (AXI4 has no WID).
    - ``bid, bresp, bvalid`` in, ``bready`` out: write response channel.
    - ``arid, araddr, arlen, arsize, arburst, arvalid`` out, ``arready`` in: read address channel.
    - ``rid, rdata, rresp, rlast, rvalid`` in, ``rready`` out: read data channel.

    Parameters
    ----------
    addr_width, data_width, id_width : int
    """

    def __init__(self, *, addr_width=32, data_width=64, id_width=1):
        self.addr_width, self.data_width, self.id_width = addr_width, data_width, id_width
        super().__init__({
            "awid": Out(id_width), "awaddr": Out(addr_width), "awlen": Out(8), "awsize": Out(3),
            "awburst": Out(2), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
            "wvalid": Out(1), "wready": In(1),
            "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "arid": Out(id_width), "araddr": Out(addr_width), "arlen": Out(8), "arsize": Out(3),
            "arburst": Out(2), "arvalid": Out(1), "arready": In(1),
            "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1),
            "rvalid": In(1), "rready": Out(1),
        })


class WishboneSignature(wiring.Signature):
    """Wishbone B4 classic slave as seen from the master (Ref: Wishbone B4 spec, 3.2).

    ``adr`` is a word address (``data_width``-bit words). Members: ``cyc, stb, we, adr, dat_w``
    out (master to slave: CYC_O, STB_O, WE_O, ADR_O, DAT_O), ``dat_r, ack`` in (DAT_I, ACK_I).
    ``sel`` is omitted: every access is a whole word.
    """

    def __init__(self, *, addr_width=8, data_width=32):
        self.addr_width, self.data_width = addr_width, data_width
        super().__init__({
            "cyc": Out(1), "stb": Out(1), "we": Out(1), "adr": Out(addr_width),
            "dat_w": Out(data_width), "dat_r": In(data_width), "ack": In(1),
        })


#: Cycles a :class:`WishboneRegisterSlice` adds to every transfer.
WISHBONE_SLICE_LATENCY = 2


class WishboneRegisterSlice(wiring.Component):
    """A register stage on a Wishbone B4 classic bus: the request reaches the slave a cycle
    after the master issues it, and the answer (ACK_I, DAT_I) reaches the master a cycle after
    the slave gives it: :data:`WISHBONE_SLICE_LATENCY` more cycles per transfer.

    For a bus between two units far apart on the chip (the sequencer and the engine's CSRs):
    each direction becomes a path from register to register with nothing but routing, which
    the placer can put midway (measured on the ULX3S build: the sequencer's descriptor-word mux
    to the engine's registered request was the engine clock's worst path, 10 ns of routing).

    One transfer at a time: the stage takes a request only when idle, and after an ACK it
    ignores the master's still-raised STB for the cycle in which the master sees that ACK.
    The data registers (ADR, DAT_W, WE towards the slave, DAT_R towards the master) take their
    input in every cycle, without a clock enable: a master holds its request stable until it
    sees ACK (Wishbone B4, "Handshaking protocol"), so the copy a cycle late is stable for as
    long as the stage's STB is high, and DAT_R needs to be valid only with ACK. An enable
    shared by the 70 data registers was itself the worst routed path (5.3 ns of its 13.8 ns
    were that net).

    Attributes
    ----------
    bus : In(WishboneSignature)
        The master's side.
    sub : Out(WishboneSignature)
        The slave's side.
    """

    def __init__(self, *, addr_width=8, data_width=32):
        sig = WishboneSignature(addr_width=addr_width, data_width=data_width)
        super().__init__({"bus": In(sig), "sub": Out(sig)})

    def elaborate(self, platform):
        m = Module()
        bus, sub = self.bus, self.sub
        m.d.sync += [bus.ack.eq(0), sub.we.eq(bus.we), sub.adr.eq(bus.adr),
                     sub.dat_w.eq(bus.dat_w), bus.dat_r.eq(sub.dat_r)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(bus.cyc & bus.stb):
                    m.d.sync += [sub.cyc.eq(1), sub.stb.eq(1)]
                    m.next = "BUSY"
            with m.State("BUSY"):
                with m.If(sub.ack):
                    m.d.sync += [sub.cyc.eq(0), sub.stb.eq(0), bus.ack.eq(1)]
                    m.next = "ANSWER"
            with m.State("ANSWER"):  # the master sees ACK in this cycle
                m.next = "IDLE"
        return m


class ReadRequestSignature(wiring.Signature):
    """A client's read-burst request to :class:`ReadArbiter` (client's view).

    The client holds ``valid`` with ``addr``/``len`` (AXI ARLEN: beats - 1) stable until the
    arbiter pulses ``ready`` (the AR handshake on the bus happened); ``valid`` never waits on
    ``ready``.
    """

    def __init__(self, addr_width):
        super().__init__({
            "valid": Out(1), "addr": Out(addr_width), "len": Out(8), "ready": In(1),
        })


#: Cycles from ``addr`` and ``remaining`` of a :class:`BurstPlanner` to its ``beats`` and
#: ``last``.
BURST_PLAN_LATENCY = 2


class BurstPlanner(wiring.Component):
    """The next INCR burst of a transfer: at most ``remaining`` and ``max_beats`` beats, and
    never across a 4 KB boundary (Ref: AMBA AXI4 spec A3.4.1), over two registered stages of
    one carry chain and a mux each (the bounds, then the smaller of them).

    ``beats`` is the burst's length from ``addr`` with ``remaining`` beats to go, and ``last``
    says it is the transfer's last burst (``beats == remaining``, from two compares side by
    side), both :data:`BURST_PLAN_LATENCY` cycles after ``addr`` and ``remaining``: a client
    holds them that long after changing them before it uses the plan.

    Parameters
    ----------
    addr_width, remaining_width, max_beats, beat_bytes : int

    Attributes
    ----------
    addr : In(addr_width), beat-aligned
    remaining : In(remaining_width)
    beats : Out(range(max_beats + 1))
    last : Out(1)
    """

    def __init__(self, *, addr_width, remaining_width, max_beats, beat_bytes):
        self.max_beats, self.beat_bytes = max_beats, beat_bytes
        super().__init__({"addr": In(addr_width), "remaining": In(remaining_width),
                          "beats": Out(range(max_beats + 1)), "last": Out(1)})

    def elaborate(self, platform):
        m = Module()
        to_boundary = Signal(range(4096 // self.beat_bytes + 1))
        first = Signal(range(self.max_beats + 1))
        within_max = Signal()
        remaining = Signal.like(self.remaining)
        m.d.sync += [
            to_boundary.eq((4096 - self.addr[:12]) // self.beat_bytes),  # 1 ... 4096 / beat
            first.eq(Mux(self.remaining < self.max_beats, self.remaining, self.max_beats)),
            within_max.eq(self.remaining <= self.max_beats), remaining.eq(self.remaining),
            self.beats.eq(Mux(first < to_boundary, first, to_boundary)),
            self.last.eq(within_max & (remaining <= to_boundary)),
        ]
        return m


class ReadArbiter(wiring.Component):
    """Round-robin arbiter of read-burst requests onto one AXI4 read-address channel.

    Client ``i`` is issued with ``ARID = i``; read data is routed back by the caller on ``RID``.
    The AR outputs are registered: once ``arvalid`` rises it stays with stable payload until
    ``arready`` (Ref: AMBA AXI4 spec A3.2.1).

    Parameters
    ----------
    n_clients : int (2 for this engine: feature map = 0, weights = 1)
    addr_width, data_width : int
    """

    def __init__(self, n_clients, *, addr_width=32, data_width=64):
        self.n_clients = n_clients
        self.data_width = data_width
        id_width = max(1, (n_clients - 1).bit_length())
        members = {f"req{i}": In(ReadRequestSignature(addr_width)) for i in range(n_clients)}
        members.update({
            "arid": Out(id_width), "araddr": Out(addr_width), "arlen": Out(8), "arsize": Out(3),
            "arburst": Out(2), "arvalid": Out(1), "arready": In(1),
        })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        reqs = [getattr(self, f"req{i}") for i in range(self.n_clients)]
        last = Signal(range(self.n_clients))  # the client granted last; it has lowest priority
        m.d.comb += [
            self.arsize.eq(Const((self.data_width // 8).bit_length() - 1, 3)),
            self.arburst.eq(0b01),  # INCR
        ]
        with m.If(self.arvalid):
            with m.If(self.arready):
                m.d.sync += self.arvalid.eq(0)
                for i, req in enumerate(reqs):
                    m.d.comb += req.ready.eq(self.arid == i)
        with m.Else():
            # Scan clients starting after the last granted one; the first waiting one wins.
            for prev in range(self.n_clients):
                with m.If(last == prev):
                    with m.Switch(Cat(*(req.valid for req in reqs))):
                        for pattern in range(1, 1 << self.n_clients):
                            with m.Case(pattern):
                                for j in range(self.n_clients):
                                    i = (prev + 1 + j) % self.n_clients
                                    if pattern >> i & 1:
                                        m.d.sync += [
                                            self.arvalid.eq(1), self.arid.eq(i),
                                            self.araddr.eq(reqs[i].addr),
                                            self.arlen.eq(reqs[i].len), last.eq(i),
                                        ]
                                        break
        return m
