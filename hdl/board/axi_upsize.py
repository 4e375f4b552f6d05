"""AXI4 width adaptation 64 -> 128 bit, for the DDR3 core's native-width user port.

LiteDRAM's 64-bit port on a 128-bit controller goes through its down-converter, which hung on
writes in our cosimulation (``docs/board.md``, LiteDRAM), so the ECPIX-5 top uses the 128-bit port
and this adapter. Each narrow INCR burst of N beats from byte address A (8-byte aligned) becomes
one wide INCR burst from ``A & ~15`` of ``(A[3] + N + 1) // 2`` beats: a wide beat carries two
narrow ones, the first wide beat starts in its upper half when A[3] is set. The wide burst stays
inside the narrow one's 4 KB page and is at most 129 beats (Ref: AMBA AXI4 spec A3.4.1: INCR up
to 256 beats, no 4 KB crossing). Write strobes of the unused half are 0 (spec A3.4.3). One
small FIFO per direction remembers (A[3], N) from the address handshake to the data.
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hdl.axi import AXI4Signature

__all__ = ["AXI4Upsizer"]


class AXI4Upsizer(wiring.Component):
    """64-bit AXI4 slave port in, 128-bit AXI4 master port out (INCR bursts, full-width beats).

    Parameters
    ----------
    addr_width, id_width : int
    outstanding : int
        Bursts per direction between their address handshake and their last data beat.

    Attributes
    ----------
    narrow : In(AXI4Signature(addr_width, 64))
    wide : Out(AXI4Signature(addr_width, 128))
    """

    def __init__(self, *, addr_width=32, id_width=1, outstanding=8):
        self.outstanding = outstanding
        super().__init__({
            "narrow": In(AXI4Signature(addr_width=addr_width, data_width=64, id_width=id_width)),
            "wide": Out(AXI4Signature(addr_width=addr_width, data_width=128, id_width=id_width)),
        })

    def _address(self, m, ch, fifo):
        """AW or AR: pass the handshake through once ``fifo`` can take (A[3], N)."""
        n, w = self.narrow, self.wide
        addr, length = getattr(n, f"{ch}addr"), getattr(n, f"{ch}len")
        odd = addr[3]
        m.d.comb += [
            getattr(w, f"{ch}addr").eq(Cat(Const(0, 4), addr[4:])),
            getattr(w, f"{ch}len").eq((odd + length + 2) // 2 - 1),
            getattr(w, f"{ch}size").eq(4), getattr(w, f"{ch}burst").eq(0b01),
            getattr(w, f"{ch}id").eq(getattr(n, f"{ch}id")),
            getattr(w, f"{ch}valid").eq(getattr(n, f"{ch}valid") & fifo.w_rdy),
            getattr(n, f"{ch}ready").eq(getattr(w, f"{ch}ready") & fifo.w_rdy),
            fifo.w_data.eq(Cat(odd, length)),
            fifo.w_en.eq(getattr(n, f"{ch}valid") & getattr(w, f"{ch}ready")),
        ]

    def elaborate(self, platform):
        m = Module()
        n, w = self.narrow, self.wide
        m.submodules.rinfo = rinfo = SyncFIFOBuffered(width=9, depth=self.outstanding)
        m.submodules.winfo = winfo = SyncFIFOBuffered(width=9, depth=self.outstanding)
        self._address(m, "ar", rinfo)
        self._address(m, "aw", winfo)

        # ---- R: each wide beat gives its upper half, or both halves, or its lower half --------
        r_started = Signal()
        r_half = Signal()  # the half the next narrow beat comes from
        r_left = Signal(9)  # narrow beats still to give in this burst
        half = Mux(r_started, r_half, rinfo.r_data[0])
        left = Mux(r_started, r_left, rinfo.r_data[1:] + 1)
        last = left == 1
        m.d.comb += [
            n.rdata.eq(Mux(half, w.rdata[64:], w.rdata[:64])), n.rresp.eq(w.rresp),
            n.rid.eq(w.rid), n.rlast.eq(last),
            n.rvalid.eq(w.rvalid & rinfo.r_rdy),
            w.rready.eq(n.rready & rinfo.r_rdy & (half | last)),
            rinfo.r_en.eq(n.rvalid & n.rready & last),
        ]
        with m.If(n.rvalid & n.rready):
            m.d.sync += [r_started.eq(~last), r_half.eq(~half), r_left.eq(left - 1)]

        # ---- W: pack two narrow beats per wide one ---------------------------------------------
        w_started = Signal()
        w_half = Signal()
        lo_data, lo_strb = Signal(64), Signal(8)
        whalf = Mux(w_started, w_half, winfo.r_data[0])
        emit = whalf | n.wlast  # this narrow beat completes a wide beat
        m.d.comb += [
            w.wdata.eq(Mux(whalf, Cat(lo_data, n.wdata), Cat(n.wdata, Const(0, 64)))),
            w.wstrb.eq(Mux(whalf, Cat(Mux(w_started, lo_strb, 0), n.wstrb),
                           Cat(n.wstrb, Const(0, 8)))),
            w.wlast.eq(n.wlast),
            w.wvalid.eq(n.wvalid & winfo.r_rdy & emit),
            n.wready.eq(winfo.r_rdy & (~emit | w.wready)),
            winfo.r_en.eq(n.wvalid & n.wready & n.wlast),
        ]
        with m.If(n.wvalid & n.wready):
            m.d.sync += [w_started.eq(~n.wlast), w_half.eq(~whalf)]
            with m.If(~whalf):
                m.d.sync += [lo_data.eq(n.wdata), lo_strb.eq(n.wstrb)]

        # ---- B: one response per burst, as it is -----------------------------------------------
        m.d.comb += [n.bid.eq(w.bid), n.bresp.eq(w.bresp), n.bvalid.eq(w.bvalid),
                     w.bready.eq(n.bready)]
        return m
