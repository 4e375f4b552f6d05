"""The writer: output FIFO → AXI4 write bursts, one contiguous run per output channel group."""

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl.axi import AXI4Signature, BurstPlanner
from hdl.descriptor import Descriptor, last_index, unit_descriptor
from hdl.engine.loader import min_of

__all__ = ["Writer"]


class Writer(wiring.Component):
    """Output FIFO → AXI write bursts, one contiguous run per (tile, output channel group).

    A burst's address is issued only when all its beats wait in the FIFO, so ``wvalid`` never
    drops inside a burst. On ``abort`` the writer finishes a burst whose address it has issued
    (Ref: AMBA AXI4 spec A3.3.1: the write data of an accepted address must follow) and stops.
    The run's address and length and each burst's length are registered one state ahead of their
    use (PREP, DATA), so no state chains more than two carry chains.

    The FIFO is seen through its level rather than as a stream: a burst may start only when all
    of its beats are there (``wvalid`` must not drop inside it), which a stream cannot say.

    Parameters
    ----------
    cfg : EngineConfig

    Attributes
    ----------
    desc : In(Descriptor)
        The layer; stable from :data:`~hdl.descriptor.DESC_LATENCY` cycles before ``run`` rises
        until the layer ends (:func:`hdl.descriptor.last_index`).
    run, abort : In(1)
    aw*, w*, b* : the write channels of :class:`hdl.axi.AXI4Signature`
    fifo_data, fifo_level : In
        Head and level of the output FIFO (the drain's ``o``, ``o_level``).
    fifo_pop : Out(1)
        Takes the head.
    done : Out(1)
        Every output beat of the layer has been written (responses are counted by the core).
    idle : Out(1)
        No burst is in progress (an abort can complete).
    """

    def __init__(self, cfg):
        self.cfg = cfg
        axi = AXI4Signature(addr_width=cfg.addr_width, data_width=cfg.data_width)
        members = {name: member for name, member in axi.members.items() if name[0] in "awb"}
        members.update({
            "desc": In(Descriptor), "run": In(1), "abort": In(1),
            "fifo_data": In(cfg.data_width), "fifo_level": In(range(cfg.out_fifo_depth + 1)),
            "fifo_pop": Out(1), "done": Out(1), "idle": Out(1),
        })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg, d = self.cfg, unit_descriptor(m, self.desc)
        beat_bytes = cfg.data_width // 8
        n_sub = cfg.p_oc // cfg.p_ic
        p0b = Signal(24)  # tile's first output beat within a channel-group plane
        p1b = Signal(25)  # p0b + tile_out_beats, before clipping to the plane
        og = Signal(8)
        og_last = last_index(m, self.desc.og_passes, name="og_last")
        sub = Signal(range(n_sub))
        g_base = Signal(32)  # group * out_plane
        addr = Signal(cfg.addr_width)
        remaining = Signal(24)
        count = Signal(8)
        m.submodules.plan = plan = BurstPlanner(addr_width=cfg.addr_width, remaining_width=24,
                                                max_beats=cfg.max_burst, beat_bytes=beat_bytes)
        m.d.comb += [plan.addr.eq(addr), plan.remaining.eq(remaining)]
        blen = plan.beats  # valid in ISSUE: PLAN and DATA follow every change of addr, remaining
        m.d.comb += [
            self.awsize.eq((beat_bytes).bit_length() - 1), self.awburst.eq(0b01),
            self.wstrb.eq(-1), self.bready.eq(1), self.wdata.eq(self.fifo_data),
            self.idle.eq(0),
        ]
        # "All tiles written" and "a padding group", registered (compares against the
        # descriptor ahead of the clock enables of the address registers were 12.9 ns routed):
        # p0b, og and sub change only in NEXT, which goes through SETTLE to RUN; the descriptor
        # arrives with `run`, so they are valid from the cycle after `run` rises (`armed`).
        finished, padding, armed = Signal(), Signal(), Signal()
        m.d.sync += [finished.eq(p0b >= d.out_plane),
                     padding.eq(og * n_sub + sub >= d.out_groups), armed.eq(self.run)]
        offset = Signal(32)  # the run's first beat from the output map's start
        with m.FSM():
            with m.State("RUN"):
                m.d.comb += self.idle.eq(1)
                with m.If(self.run & armed & ~self.abort):
                    with m.If(finished):
                        m.next = "DONE"
                    with m.Elif(padding):
                        m.next = "NEXT"
                    with m.Else():
                        m.d.sync += [offset.eq(g_base + p0b), p1b.eq(p0b + d.tile_out_beats)]
                        m.next = "PREP"
            with m.State("PREP"):
                m.d.comb += self.idle.eq(1)
                m.d.sync += [addr.eq(d.out_addr + offset * beat_bytes),
                             remaining.eq(min_of(p1b, d.out_plane) - p0b)]
                m.next = "PLAN"
            with m.State("PLAN"):
                m.d.comb += self.idle.eq(1)
                m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += self.idle.eq(1)
                with m.If(self.abort):
                    m.next = "STOP"
                with m.Elif(remaining == 0):
                    m.next = "NEXT"
                with m.Else():
                    m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += self.idle.eq(1)
                with m.If(self.abort):
                    m.next = "STOP"
                with m.Elif(self.fifo_level >= blen):
                    m.d.sync += [self.awvalid.eq(1), self.awaddr.eq(addr),
                                 self.awlen.eq(blen - 1), count.eq(0)]
                    m.next = "ADDR"
            with m.State("ADDR"):
                with m.If(self.awready):
                    m.d.sync += self.awvalid.eq(0)
                    m.next = "BURST"
            with m.State("BURST"):
                m.d.comb += [
                    self.wvalid.eq(1), self.wlast.eq(count == self.awlen),
                    self.fifo_pop.eq(self.wready),
                ]
                with m.If(self.wready):
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == self.awlen):
                        m.d.sync += [
                            addr.eq(addr + blen * beat_bytes), remaining.eq(remaining - blen),
                        ]
                        m.next = "PLAN"
            with m.State("NEXT"):
                m.d.comb += self.idle.eq(1)
                m.d.sync += g_base.eq(g_base + d.out_plane)
                with m.If(sub == n_sub - 1):
                    m.d.sync += sub.eq(0)
                    with m.If(og == og_last):
                        m.d.sync += [og.eq(0), g_base.eq(0), p0b.eq(p0b + d.tile_out_beats)]
                    with m.Else():
                        m.d.sync += og.eq(og + 1)
                with m.Else():
                    m.d.sync += sub.eq(sub + 1)
                m.next = "SETTLE"
            with m.State("SETTLE"):  # `finished` and `padding` see the new p0b, og, sub
                m.d.comb += self.idle.eq(1)
                m.next = "RUN"
            with m.State("DONE"):
                m.d.comb += [self.done.eq(1), self.idle.eq(1)]
            with m.State("STOP"):
                m.d.comb += self.idle.eq(1)
        return m
