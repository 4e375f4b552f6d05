"""The weight loader: requant tables and weights from DDR, per (tile, output-channel group)."""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.axi import BurstPlanner, ReadRequestSignature
from hdl.bram import BRAM_READ_LATENCY, BlockRAM
from hdl.descriptor import Descriptor, last_index, unit_descriptor
from hdl.engine.loader import ReadBeat, advanced

__all__ = ["WEIGHT_STORE_LATENCY", "ParamBeat", "WeightLoader", "WeightStore"]

#: A beat written into the :class:`WeightStore` in cycle ``c`` can be taken in ``c +
#: WEIGHT_STORE_LATENCY``: fetched the cycle after, then the block RAM's read.
WEIGHT_STORE_LATENCY = 1 + BRAM_READ_LATENCY


class ParamBeat(data.StructLayout):
    """One requant-table beat for the parameter registers: word ``index`` of ``slot``."""

    def __init__(self, data_width, p_oc):
        super().__init__({"data": data_width, "slot": 1, "index": range(2 * p_oc)})


class WeightStore(wiring.Component):
    """The weight FIFO, which can also replay: ``depth`` beats in block RAM, a stream out.

    FIFO (``replay`` low): beats are read in the order written and their space is the loader's
    to reuse (it counts credits). Replay: the layer's whole weight stream (``total`` beats, less
    than ``depth``) is written once, during the first row tile, and read again from its start
    for every tile: after beat ``total - 1`` the read pointer wraps to 0 (``total`` is final by
    then: ``complete`` rises with the request of the stream's last burst, before its data).

    The output is the :class:`hdl.bram.BlockRAM`'s output register, behind its read register:
    a two-stage pipeline that advances while the output is empty or being taken, so the stream
    runs at one beat per cycle; a beat written in cycle ``c`` can be taken in ``c +``
    :data:`WEIGHT_STORE_LATENCY`. A fetch reads only behind the write pointer (``fetch !=
    write``), so it never reads the word being written (:class:`hdl.bram.BlockRAM`).

    Attributes
    ----------
    w_en, w_data : In
        A beat to store.
    replay, complete : In(1)
    total : In(24)
    o : Out(stream.Signature(width))
    """

    def __init__(self, width, depth):
        self.width, self.depth = width, depth
        super().__init__({
            "w_en": In(1), "w_data": In(width), "replay": In(1), "complete": In(1),
            "total": In(24), "o": Out(stream.Signature(width)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = BlockRAM(self.width, self.depth, read_enable=True)
        wp, fp = Signal(range(self.depth)), Signal(range(self.depth))  # write, fetch pointers
        m.d.comb += [mem.wr_addr.eq(wp), mem.wr_data.eq(self.w_data), mem.wr_en.eq(self.w_en)]
        with m.If(self.w_en):
            m.d.sync += wp.eq(Mux(wp == self.depth - 1, 0, wp + 1))
        # The read pipeline advances unless the output holds a beat not taken; `fetched[k]`:
        # stage k holds a fetched beat (the last stage is the output).
        advance = ~self.o.valid | self.o.ready
        fetched = Signal(BRAM_READ_LATENCY)
        # Replay never fills the memory (total < depth), so "fetch != write" means "a beat
        # waits" in both modes.
        fetch = (fp != wp) & advance
        last = Signal(24)  # the stream's last beat, registered: total is final long before use
        m.d.sync += last.eq(self.total - 1)
        wrap = (self.replay & self.complete & (fp == last)) | (fp == self.depth - 1)
        m.d.comb += [mem.rd_addr.eq(fp), mem.rd_en.eq(advance), self.o.payload.eq(mem.rd_data),
                     self.o.valid.eq(fetched[-1])]
        with m.If(advance):
            m.d.sync += fetched.eq(Cat(fetch, fetched[:-1]))
        with m.If(fetch):
            m.d.sync += fp.eq(Mux(wrap, 0, fp + 1))
        return m


class WeightLoader(wiring.Component):
    """Per (tile, output-channel group): the group's requant table (``2·p_oc`` beats) into a
    parameter slot, then its weight stream (``og_weight_beats``) into the weight FIFO.

    The table of group ``og`` goes to slot ``og % 2`` (counting over the whole layer), claimed
    when the drain has ``release``\\ d it; the weights follow in bursts that are requested only
    when the FIFO has room for all their beats (credits), so read data is always accepted. The
    table is re-read for every row tile, and so are the weights unless ``weights_resident``: then
    the layer's whole weight stream fits the :class:`WeightStore`, is read from DDR during the
    first tile only and replayed from the store for the others. Each burst's length is planned
    over the two states before its request (:class:`hdl.axi.BurstPlanner`; PPLAN, WPLAN).

    Parameters
    ----------
    cfg : EngineConfig

    Attributes
    ----------
    desc : In(Descriptor)
        The layer; stable from :data:`~hdl.descriptor.DESC_LATENCY` cycles before ``run`` rises
        until the layer ends (:func:`hdl.descriptor.last_index`).
    run : In(1)
    req : Out(ReadRequestSignature)
    r : In(stream.Signature(ReadBeat, always_ready=True))
        The read data of this client's bursts, in request order.
    params : Out(stream.Signature(ParamBeat, always_ready=True))
        Table beats, to be stored at once.
    release : In(2)
        Bit ``s``: the drain is done with parameter slot ``s``.
    params_ready : Out(2)
        Bit ``s``: parameter slot ``s`` holds its whole table (until released). The bias is
        needed by the group's first pass; replayed weights no longer arrive after their table.
    weights : Out(stream.Signature(data_width))
        The weight stream, ``[og][ig][ky][kx][p_oc]`` beats of ``p_ic`` int8 weights.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        super().__init__({
            "desc": In(Descriptor), "run": In(1),
            "req": Out(ReadRequestSignature(cfg.addr_width)),
            "r": In(stream.Signature(ReadBeat(cfg.data_width), always_ready=True)),
            "params": Out(stream.Signature(ParamBeat(cfg.data_width, cfg.p_oc),
                                           always_ready=True)),
            "release": In(2), "params_ready": Out(2),
            "weights": Out(stream.Signature(cfg.data_width)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, d = self.cfg, unit_descriptor(m, self.desc)
        beat_bytes = cfg.data_width // 8
        param_beats = 2 * cfg.p_oc
        # Table burst or weight burst? Unbuffered, as the input loader's tags (latency-1 reads).
        m.submodules.tags = tags = fifo.SyncFIFO(width=1, depth=16)
        m.submodules.store = store = WeightStore(cfg.data_width, cfg.weight_store_depth)
        wiring.connect(m, store.o, wiring.flipped(self.weights))
        total, complete = Signal(24), Signal()  # replay: the stream's length, and it is whole
        m.d.comb += [store.replay.eq(d.weights_resident), store.total.eq(total),
                     store.complete.eq(complete)]
        busy = Signal(2)  # slot claimed (or filled); freed by release
        claim = Signal(2)
        m.d.sync += busy.eq((busy | claim) & ~self.release)
        credits = Signal(range(cfg.weight_fifo_depth + 1), init=cfg.weight_fifo_depth)
        take = Signal(range(cfg.weight_fifo_depth + 1))
        pop = self.weights.valid & self.weights.ready
        m.d.sync += credits.eq(credits - take + pop)

        c0w = Signal(24)
        c0w_next = advanced(m, c0w, d.tile_pix)
        og = Signal(8)
        og_last = last_index(m, self.desc.og_passes, name="og_last")
        slot = Signal()
        paddr = Signal(cfg.addr_width)  # next table / weight-stream burst
        waddr = Signal(cfg.addr_width)
        rem = Signal(24)
        tables = Signal()  # the bursts to plan are the table's (else the weights')
        m.submodules.plan = plan = BurstPlanner(addr_width=cfg.addr_width, remaining_width=24,
                                                max_beats=cfg.max_burst, beat_bytes=beat_bytes)
        m.d.comb += [plan.addr.eq(Mux(tables, paddr, waddr)), plan.remaining.eq(rem)]
        blen, last = plan.beats, plan.last

        def request(addr, table):  # request the burst; on the grant, advance past it
            m.d.comb += [self.req.addr.eq(addr), self.req.len.eq(blen - 1),
                         tags.w_en.eq(self.req.ready), tags.w_data.eq(table)]
            with m.If(self.req.ready):
                m.d.sync += [addr.eq(addr + blen * beat_bytes), rem.eq(rem - blen)]

        # The (tile, group) tests, registered: compares of c0w against the descriptor ahead of
        # the clock enables of every address and count register were 12.7 ns routed. c0w and og
        # change only in _advance, which goes through NEXT (a cycle for these to follow) to SLOT.
        more, first_tile, first_og = Signal(), Signal(), Signal()
        m.d.sync += [more.eq(c0w < d.in_plane), first_tile.eq(c0w == 0), first_og.eq(og == 0)]
        with m.FSM():
            with m.State("SLOT"):
                with m.If(self.run & more & ~busy.bit_select(slot, 1)):
                    m.d.comb += claim.eq(Mux(slot, 0b10, 0b01))
                    m.d.sync += [rem.eq(param_beats), tables.eq(1)]
                    with m.If(first_og):  # each tile re-reads the table (and the weights)
                        m.d.sync += [paddr.eq(d.param_addr), waddr.eq(d.w_addr)]
                    with m.If(first_tile):
                        m.d.sync += total.eq(total + d.og_weight_beats)
                    m.next = "PPLAN1"
            with m.State("NEXT"):  # `more` and the first-tile/group flags see the new c0w, og
                m.next = "SLOT"
            with m.State("PPLAN1"):  # the planner's two stages see the address and rem
                m.next = "PPLAN2"
            with m.State("PPLAN2"):
                m.next = "PARAMS"
            with m.State("PARAMS"):
                m.d.comb += self.req.valid.eq(self.run & tags.w_rdy)
                request(paddr, 1)
                with m.If(self.req.ready):
                    m.next = "PPLAN1"
                    with m.If(last):
                        m.d.sync += [rem.eq(d.og_weight_beats), tables.eq(0)]
                        m.next = "WPLAN1"
                        with m.If(d.weights_resident & ~first_tile):  # replayed from the store
                            self._advance(m, og, og_last, slot, c0w, c0w_next)
                            m.next = "NEXT"
            with m.State("WPLAN1"):
                m.next = "WPLAN2"
            with m.State("WPLAN2"):
                m.next = "WEIGHTS"
            with m.State("WEIGHTS"):
                # replay: the store holds the whole stream, no credits needed
                room = d.weights_resident | (credits >= blen)
                m.d.comb += [self.req.valid.eq(self.run & tags.w_rdy & room),
                             take.eq(Mux(self.req.ready, blen, 0))]
                request(waddr, 0)
                with m.If(self.req.ready):
                    m.next = "WPLAN1"
                    with m.If(last):
                        self._advance(m, og, og_last, slot, c0w, c0w_next)
                        with m.If(first_tile & (og == og_last)):
                            m.d.sync += complete.eq(1)
                        m.next = "NEXT"
        # Receive: table beats out with their slot and index, weights into the FIFO.
        r_slot = Signal()
        r_idx = Signal(range(param_beats))
        table = tags.r_data[0]
        m.d.comb += [
            tags.r_en.eq(self.r.valid & self.r.p.last),
            store.w_data.eq(self.r.p.data), store.w_en.eq(self.r.valid & ~table),
            self.params.valid.eq(self.r.valid & table), self.params.p.data.eq(self.r.p.data),
            self.params.p.slot.eq(r_slot), self.params.p.index.eq(r_idx),
        ]
        filled = Signal(2)
        m.d.sync += self.params_ready.eq((self.params_ready | filled) & ~self.release)
        with m.If(self.params.valid):
            m.d.sync += r_idx.eq(r_idx + 1)
            with m.If(r_idx == param_beats - 1):
                m.d.sync += [r_idx.eq(0), r_slot.eq(~r_slot)]
                m.d.comb += filled.eq(Mux(r_slot, 0b10, 0b01))
        return m

    @staticmethod
    def _advance(m, og, og_last, slot, c0w, c0w_next):
        """The next (tile, output group) and its parameter slot."""
        m.d.sync += [slot.eq(~slot), og.eq(og + 1)]
        with m.If(og == og_last):
            m.d.sync += [og.eq(0), c0w.eq(c0w_next)]
