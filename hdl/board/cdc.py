"""Clock-domain crossings of the board top, built on :class:`amaranth.lib.fifo.AsyncFIFO`.

- :class:`WishboneCDC`: one Wishbone B4 classic access at a time from a master's domain to a
  slave's (request FIFO one way, response FIFO back).
- :class:`AXI4CDC`: an AXI4 master's five channels into another domain, one FIFO per channel
  (Ref: AMBA AXI4 spec A3.1: the channels are independent, each a VALID/READY handshake, so a
  FIFO per channel keeps every ordering rule of the protocol).
"""

from amaranth import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import AsyncFIFO
from amaranth.lib.wiring import In, Out

from hdl.axi import AXI4Signature, WishboneSignature

__all__ = ["AXI4CDC", "WishboneCDC"]


class WishboneCDC(wiring.Component):
    """A Wishbone B4 classic slave in domain ``m_domain`` that replays each access as a master in
    domain ``s_domain``.

    The master side accepts one access (CYC_I & STB_I), sends address/data/WE across, and
    terminates it with ACK_O or ``err`` when the slave side's answer comes back (Ref: Wishbone
    B4 3.1.3: a slave may insert any number of wait states). An access the master abandons
    (CYC_I drops before the answer: the bridge's bus timeout) still completes on the far side;
    its late answer is dropped, and the next access waits for it, so answers never pair with the
    wrong access.

    Parameters
    ----------
    addr_width : int
        Word-address width on both sides.
    m_domain, s_domain : str
    depth : int
        FIFO depth (one access is in flight at a time, so any depth the FIFO accepts).

    Attributes
    ----------
    m : In(WishboneSignature(addr_width, 32)), m_err : Out(1)
        The slave port (in ``m_domain``) and its ERR_O.
    s : Out(WishboneSignature(addr_width, 32)), s_err : In(1)
        The master port (in ``s_domain``) and its ERR_I (tie to 0 if the slave cannot fail).
    """

    def __init__(self, addr_width, *, m_domain, s_domain, depth=4):
        self.addr_width, self.m_domain, self.s_domain, self.depth = (
            addr_width, m_domain, s_domain, depth)
        super().__init__({
            "m": In(WishboneSignature(addr_width=addr_width, data_width=32)),
            "m_err": Out(1),
            "s": Out(WishboneSignature(addr_width=addr_width, data_width=32)),
            "s_err": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        aw = self.addr_width
        m.submodules.req = req = AsyncFIFO(width=aw + 33, depth=self.depth,
                                           w_domain=self.m_domain, r_domain=self.s_domain)
        m.submodules.resp = resp = AsyncFIFO(width=33, depth=self.depth,
                                             w_domain=self.s_domain, r_domain=self.m_domain)
        md, sd = m.d[self.m_domain], m.d[self.s_domain]
        bus, far = self.m, self.s

        # ---- master side (m_domain) ---------------------------------------------------------
        pending = Signal()  # an access went across and its answer has not come back
        abandoned = Signal()  # ... and its master stopped waiting for it
        m.d.comb += req.w_data.eq(Cat(bus.adr, bus.dat_w, bus.we))
        ack_r, err_r = Signal(), Signal()  # the registered termination of the last access
        # Not in the termination's own cycle: the master still holds STB_O there (B4 3.1.3).
        m.d.comb += req.w_en.eq(bus.cyc & bus.stb & ~pending & ~ack_r & ~err_r)
        with m.If(req.w_en & req.w_rdy):
            md += pending.eq(1)
        with m.If(pending & ~bus.cyc):
            md += abandoned.eq(1)
        m.d.comb += resp.r_en.eq(pending)  # answers come only for pending accesses
        md += [ack_r.eq(0), err_r.eq(0)]
        with m.If(resp.r_en & resp.r_rdy):
            md += [pending.eq(0), abandoned.eq(0)]
            with m.If(bus.cyc & ~abandoned):
                md += [bus.dat_r.eq(resp.r_data[:32]), ack_r.eq(~resp.r_data[32]),
                       err_r.eq(resp.r_data[32])]
        m.d.comb += [bus.ack.eq(ack_r), self.m_err.eq(err_r)]

        # ---- slave side (s_domain): one registered access per request -----------------------
        busy = Signal()
        m.d.comb += [far.cyc.eq(busy), far.stb.eq(busy), req.r_en.eq(~busy & resp.w_rdy)]
        with m.If(req.r_en & req.r_rdy):
            sd += [busy.eq(1), far.adr.eq(req.r_data[:aw]), far.dat_w.eq(req.r_data[aw:aw + 32]),
                   far.we.eq(req.r_data[aw + 32])]
        m.d.comb += resp.w_data.eq(Cat(far.dat_r, self.s_err))
        with m.If(busy & (far.ack | self.s_err)):
            m.d.comb += resp.w_en.eq(1)
            sd += busy.eq(0)
        return m


class AXI4CDC(wiring.Component):
    """An AXI4 master in ``m_domain`` carried into ``s_domain``: one AsyncFIFO per channel.

    Parameters
    ----------
    addr_width, data_width, id_width : int
        As :class:`hdl.axi.AXI4Signature`.
    m_domain, s_domain : str
    depth : int
        Depth of the W and R FIFOs (bursts stream through at one beat per cycle of the slower
        domain once they fill); AW, AR and B get 4.

    Attributes
    ----------
    m : In(AXI4Signature)  (the slave port, ``m_domain``)
    s : Out(AXI4Signature) (the master port, ``s_domain``)
    """

    #: Channel: (payload members, direction: True = master to slave).
    CHANNELS = {
        "aw": (("awid", "awaddr", "awlen", "awsize", "awburst"), True),
        "w": (("wdata", "wstrb", "wlast"), True),
        "b": (("bid", "bresp"), False),
        "ar": (("arid", "araddr", "arlen", "arsize", "arburst"), True),
        "r": (("rid", "rdata", "rresp", "rlast"), False),
    }

    def __init__(self, *, addr_width=32, data_width=64, id_width=1, m_domain, s_domain,
                 depth=16):
        self.m_domain, self.s_domain, self.depth = m_domain, s_domain, depth
        sig = AXI4Signature(addr_width=addr_width, data_width=data_width, id_width=id_width)
        super().__init__({"m": In(sig), "s": Out(sig)})

    def elaborate(self, platform):
        m = Module()
        for ch, (members, forward) in self.CHANNELS.items():
            src, dst = (self.m, self.s) if forward else (self.s, self.m)
            w_dom, r_dom = ((self.m_domain, self.s_domain) if forward
                            else (self.s_domain, self.m_domain))
            src_payload = Cat(*(getattr(src, name) for name in members))
            depth = self.depth if ch in ("w", "r") else 4
            fifo = AsyncFIFO(width=len(src_payload), depth=depth, w_domain=w_dom, r_domain=r_dom)
            m.submodules[ch] = fifo
            m.d.comb += [
                fifo.w_data.eq(src_payload), fifo.w_en.eq(getattr(src, f"{ch}valid")),
                getattr(src, f"{ch}ready").eq(fifo.w_rdy),
                Cat(*(getattr(dst, name) for name in members)).eq(fifo.r_data),
                getattr(dst, f"{ch}valid").eq(fifo.r_rdy),
                fifo.r_en.eq(getattr(dst, f"{ch}ready")),
            ]
        return m


# Every member of AXI4Signature is carried by exactly one channel above.
assert {n for members, _ in AXI4CDC.CHANNELS.values() for n in members} | {
    f"{ch}{hs}" for ch in AXI4CDC.CHANNELS for hs in ("valid", "ready")} == set(
    AXI4Signature().members.keys()), "AXI4CDC.CHANNELS out of date with AXI4Signature"
