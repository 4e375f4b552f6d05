"""The board top's bus glue: Wishbone address decoder, Wishbone-to-AXI4 adapter, AXI4 arbiter.

The host bridge (:class:`hdl.bridge.UARTBridge`) is the one Wishbone master; the decoder routes
each access by address to the sequencer's CSRs, the DRAM controller's control port or the DRAM
window, whose accesses :class:`WishboneToAXI4` turns into single-beat AXI4 bursts that
:class:`AXI4Arbiter` interleaves, a whole transaction at a time, with the sequencer's master.
``docs/board.md`` has the address map.
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Flow, In, Out

from hdl.axi import AXI4Signature, WishboneSignature

__all__ = ["AXI4Arbiter", "Window", "WishboneDecoder", "WishboneToAXI4"]


class Window:
    """A decoder target: ``name``, byte ``base`` (a multiple of ``size``), byte ``size`` (a power
    of two, at least 4). The target sees word addresses relative to ``base``."""

    def __init__(self, name, base, size):
        if size < 4 or size & (size - 1):
            raise ValueError(f"window {name!r}: size must be a power of two >= 4, not {size:#x}")
        if base % size:
            raise ValueError(f"window {name!r}: base {base:#x} is not a multiple of its size "
                             f"{size:#x}")
        self.name, self.base, self.size = name, base, size
        self.addr_width = (size // 4).bit_length() - 1

    def __repr__(self):
        return f"Window({self.name!r}, {self.base:#010x}, {self.size:#x})"


class WishboneDecoder(wiring.Component):
    """Routes a Wishbone B4 classic master (30-bit word addresses, 32-bit data) to windows.

    An access outside every window ends with ``err`` one cycle later (Wishbone B4 3.1.3.1:
    ERR_O terminates a cycle in place of ACK_O). Each target's ``err`` input is passed through.

    Parameters
    ----------
    windows : list of Window
        Non-overlapping.

    Attributes
    ----------
    bus : In(WishboneSignature(30, 32)), err : Out(1)
        From the master (its ERR_I is ``err``).
    <name> : Out(WishboneSignature(window.addr_width, 32)), <name>_err : In(1)
        One port per window.
    """

    def __init__(self, windows):
        self.windows = list(windows)
        spans = sorted((w.base, w.base + w.size, w.name) for w in self.windows)
        for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
            if start < end:
                raise ValueError(f"windows {a!r} and {b!r} overlap")
        members = {"bus": In(WishboneSignature(addr_width=30, data_width=32)), "err": Out(1)}
        for w in self.windows:
            members[w.name] = Out(WishboneSignature(addr_width=w.addr_width, data_width=32))
            members[f"{w.name}_err"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        hit_any = Signal()
        unmapped_err = Signal()
        acks, errs, data = [], [], []
        for w in self.windows:
            port = getattr(self, w.name)
            hit = Signal(name=f"hit_{w.name}")
            m.d.comb += hit.eq(bus.adr[w.addr_width:] == (w.base >> (2 + w.addr_width)))
            m.d.comb += [
                port.cyc.eq(bus.cyc & hit), port.stb.eq(bus.stb & hit), port.we.eq(bus.we),
                port.adr.eq(bus.adr[:w.addr_width]), port.dat_w.eq(bus.dat_w),
            ]
            acks.append(port.ack & hit)
            errs.append(getattr(self, f"{w.name}_err") & hit)
            data.append((hit, port.dat_r))
            hit_any = hit_any | hit
        m.d.sync += unmapped_err.eq(bus.cyc & bus.stb & ~hit_any & ~unmapped_err)
        dat_r = Const(0, 32)
        for hit, value in data:
            dat_r = Mux(hit, value, dat_r)
        m.d.comb += [bus.dat_r.eq(dat_r), bus.ack.eq(Cat(*acks).any()),
                     self.err.eq(Cat(unmapped_err, *errs).any())]
        return m


class WishboneToAXI4(wiring.Component):
    """Each Wishbone B4 classic access (32-bit word) as one single-beat AXI4 burst.

    A burst of full bus width (``AxSIZE`` = the data width, ``AxLEN`` = 0) at the beat-aligned
    address; a write sets only the four WSTRB bits of its word, a read takes its word from its
    lane of RDATA (Ref: AMBA AXI4 spec A3.4.3, write strobes; A3.4.4: a RESP other than OKAY
    ends the access with ERR). AW and W are presented together; one access at a time.

    Parameters
    ----------
    addr_width : int
        Word-address width of the Wishbone side (the AXI byte address is ``adr * 4``).
    data_width : int
        AXI data width (64 or 128).

    Attributes
    ----------
    wb : In(WishboneSignature(addr_width, 32)), wb_err : Out(1)
    axi : Out(AXI4Signature(addr_width + 2, data_width))
    """

    def __init__(self, *, addr_width, data_width=64):
        if data_width not in (32, 64, 128, 256):
            raise ValueError(f"data_width must be 32, 64, 128 or 256, not {data_width!r}")
        self.addr_width, self.data_width = addr_width, data_width
        super().__init__({
            "wb": In(WishboneSignature(addr_width=addr_width, data_width=32)),
            "wb_err": Out(1),
            "axi": Out(AXI4Signature(addr_width=addr_width + 2, data_width=data_width)),
        })

    def elaborate(self, platform):
        m = Module()
        wb, axi, dw = self.wb, self.axi, self.data_width
        lanes = dw // 32
        lane_bits = (lanes - 1).bit_length()
        lane = wb.adr[:lane_bits] if lane_bits else Const(0, 1)
        beat_addr = (wb.adr >> lane_bits) << (lane_bits + 2)
        size = (dw // 8).bit_length() - 1
        m.d.comb += [
            axi.awaddr.eq(beat_addr), axi.araddr.eq(beat_addr),
            axi.awsize.eq(size), axi.arsize.eq(size), axi.awburst.eq(0b01), axi.arburst.eq(0b01),
            axi.awlen.eq(0), axi.arlen.eq(0), axi.awid.eq(0), axi.arid.eq(0),
            axi.wdata.eq(wb.dat_w.replicate(lanes)), axi.wstrb.eq(Const(0xF, 4) << (lane * 4)),
            axi.wlast.eq(1),
        ]
        done, failed = Signal(), Signal()
        m.d.comb += [wb.ack.eq(done & ~failed), self.wb_err.eq(done & failed)]
        m.d.sync += done.eq(0)
        aw_sent, w_sent = Signal(), Signal()
        with m.FSM():
            with m.State("IDLE"):
                with m.If(wb.cyc & wb.stb & ~done):  # not in the ACK cycle: STB_O is still up
                    with m.If(wb.we):
                        m.d.sync += [aw_sent.eq(0), w_sent.eq(0)]
                        m.next = "WRITE"
                    with m.Else():
                        m.next = "AR"
            with m.State("AR"):
                m.d.comb += axi.arvalid.eq(1)
                with m.If(axi.arready):
                    m.next = "R"
            with m.State("R"):
                m.d.comb += axi.rready.eq(1)
                with m.If(axi.rvalid):
                    m.d.sync += [wb.dat_r.eq(axi.rdata.word_select(lane, 32)),
                                 failed.eq(axi.rresp[1]), done.eq(1)]
                    m.next = "IDLE"
            with m.State("WRITE"):
                m.d.comb += [axi.awvalid.eq(~aw_sent), axi.wvalid.eq(~w_sent)]
                with m.If(axi.awvalid & axi.awready):
                    m.d.sync += aw_sent.eq(1)
                with m.If(axi.wvalid & axi.wready):
                    m.d.sync += w_sent.eq(1)
                with m.If((aw_sent | axi.awready) & (w_sent | axi.wready)):
                    m.next = "B"
            with m.State("B"):
                m.d.comb += axi.bready.eq(1)
                with m.If(axi.bvalid):
                    m.d.sync += [failed.eq(axi.bresp[1]), done.eq(1)]
                    m.next = "IDLE"
        return m


class AXI4Arbiter(wiring.Component):
    """Two AXI4 masters onto one slave, a whole transaction at a time.

    The owner keeps the bus while it has a burst in flight (an AR or AW accepted and its last R
    beat or B not yet returned) or raises ARVALID, AWVALID or WVALID; when it has none and the
    other master waits, the other one gets the bus. Ownership changes only with nothing in flight,
    so responses always belong to the owner and no ID bits are added. Master 0 wins a tie at
    reset. The grant is a register: no master output reaches the slave through a combinational
    path from the other master's inputs.

    Parameters
    ----------
    addr_width, data_width, id_width : int

    Attributes
    ----------
    m0, m1 : In(AXI4Signature)
    s : Out(AXI4Signature)
    """

    def __init__(self, *, addr_width=32, data_width=64, id_width=1, max_outstanding=64):
        self.max_outstanding = max_outstanding
        sig = AXI4Signature(addr_width=addr_width, data_width=data_width, id_width=id_width)
        super().__init__({"m0": In(sig), "m1": In(sig), "s": Out(sig)})

    def elaborate(self, platform):
        m = Module()
        grant = Signal()  # 0: m0 owns the bus, 1: m1
        in_flight = Signal(range(2 * self.max_outstanding + 1))
        s = self.s
        for name, member in s.signature.members.items():
            port, a, b = getattr(s, name), getattr(self.m0, name), getattr(self.m1, name)
            if member.flow == Flow.Out:  # master to slave: from the owner
                m.d.comb += port.eq(Mux(grant, b, a))
            elif name.endswith(("valid", "ready")):  # slave handshakes: to the owner only
                m.d.comb += [a.eq(port & ~grant), b.eq(port & grant)]
            else:  # payloads: meaningless without their VALID
                m.d.comb += [a.eq(port), b.eq(port)]
        issued = (s.arvalid & s.arready).as_unsigned() + (s.awvalid & s.awready).as_unsigned()
        retired = ((s.rvalid & s.rready & s.rlast).as_unsigned()
                   + (s.bvalid & s.bready).as_unsigned())
        m.d.sync += in_flight.eq(in_flight + issued - retired)

        def wants(p):
            return p.arvalid | p.awvalid | p.wvalid

        owner_busy = Mux(grant, wants(self.m1), wants(self.m0)) | (in_flight != 0) | (issued != 0)
        other_wants = Mux(grant, wants(self.m0), wants(self.m1))
        with m.If(~owner_busy & other_wants):
            m.d.sync += grant.eq(~grant)
        return m
