"""The drain: a full accumulator bank → requantization (or int32) → maxpool → output FIFO."""

from amaranth import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.bram import BRAM_READ_LATENCY
from hdl.descriptor import Descriptor, last_index, unit_descriptor
from hdl.engine.loader import advanced, min_of
from hdl.fanout import Replicated
from hdl.pool import POOL_LATENCY, PoolMax, PoolWalker
from hdl.requant import REQUANT_LATENCY, RequantLane, RequantUnit

__all__ = ["DRAIN_FLUSH", "DRAIN_LATENCY", "Drain"]

#: Cycles from a walker step to its output FIFO write: the registered bank address, the bank
#: read (:data:`~hdl.bram.BRAM_READ_LATENCY`), the drained bank's word registered, the
#: sub-group's lanes and parameters registered, the requantization, the window max, then the
#: FIFO's write registered.
DRAIN_LATENCY = 1 + BRAM_READ_LATENCY + 1 + 1 + REQUANT_LATENCY + POOL_LATENCY + 1
#: Cycles the drain waits after a bank's last read before freeing it: every read has landed.
DRAIN_FLUSH = DRAIN_LATENCY + 2


class Drain(wiring.Component):
    """Per (tile, output-channel group): walk the full bank in output order (:class:`PoolWalker`),
    requantize ``p_ic`` lanes per read (:class:`RequantUnit`) or pass int32 beats through, take
    the window maxima (:class:`PoolMax`) and queue the output beats for the writer; then free
    the bank and its parameter slot. With the descriptor's ``upsample`` the walk emits every
    output row twice and every pixel of it twice: the upsampled map's rows, in the order the
    writer's contiguous runs land them (``docs/engine.md``, "Route, upsample ...").

    Banks alternate (``og`` counted over the layer, bank and parameter slot ``og % 2``). A read
    is issued only while the output FIFO has room for every position in flight, so nothing
    downstream ever stalls. After the walk the drain waits for the pipeline to empty (FLUSH,
    :data:`DRAIN_FLUSH` cycles) before freeing the bank.

    Full/free flags towards the compute unit rather than a stream: the drain reads a bank in
    pooling order, not in the order it was written, so what it needs is "this bank is complete".

    Parameters
    ----------
    cfg : EngineConfig

    Attributes
    ----------
    desc : In(Descriptor)
        The layer; stable from :data:`~hdl.descriptor.DESC_LATENCY` cycles before ``run`` rises
        until the layer ends (:func:`hdl.descriptor.last_index`).
    run : In(1)
    full : In(2)
        Bit ``b``: bank ``b`` holds a complete output-channel group.
    free : Out(2)
        Bit ``b`` pulses when bank ``b`` (and parameter slot ``b``) has been drained.
    bank_addr : Out(range(acc_depth))
        Read address into the bank being drained (registered).
    bank_data : In(ArrayLayout(ArrayLayout(signed(32), p_oc), 2))
        Both banks' words at ``bank_addr`` of :data:`~hdl.bram.BRAM_READ_LATENCY` cycles before
        (the drain picks its own).
    params : In(ArrayLayout(unsigned(data_width), 4 * p_oc))
        The requant tables of both slots (``docs/engine.md``: two words per channel).
    o : Out(stream.Signature(data_width))
        Output beats, in the writer's order.
    o_level : Out(range(out_fifo_depth + 1))
        Beats waiting in ``o`` (the writer issues a burst only when all of it is there).
    draining, blocked : Out(1)
        Busy with a bank; waiting for FIFO room (performance counters).
    """

    def __init__(self, cfg):
        self.cfg = cfg
        n_sub = cfg.p_oc // cfg.p_ic
        self.n_sub = n_sub
        super().__init__({
            "desc": In(Descriptor), "run": In(1), "full": In(2), "free": Out(2),
            "bank_addr": Out(range(cfg.acc_depth)),
            "bank_data": In(data.ArrayLayout(data.ArrayLayout(signed(32), cfg.p_oc), 2)),
            "params": In(data.ArrayLayout(cfg.data_width, 4 * cfg.p_oc)),
            "o": Out(stream.Signature(cfg.data_width)),
            "o_level": Out(range(cfg.out_fifo_depth + 1)),
            "draining": Out(1), "blocked": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, d, n_sub = self.cfg, unit_descriptor(m, self.desc), self.n_sub
        m.submodules.ofifo = ofifo = fifo.SyncFIFOBuffered(width=cfg.data_width,
                                                           depth=cfg.out_fifo_depth)
        wiring.connect(m, ofifo.r_stream, wiring.flipped(self.o))
        m.d.comb += self.o_level.eq(ofifo.r_level)
        m.submodules.walker = pw = PoolWalker(n_sub=n_sub)
        p0 = Signal(16)  # tile's first output row
        c0 = Signal(16)
        og = Signal(8)
        slot = Signal()
        flush = Signal(range(DRAIN_FLUSH))
        og_last = last_index(m, self.desc.og_passes, name="og_last")
        p0_next, c0_next = advanced(m, p0, d.tile_rows), advanced(m, c0, d.tile_conv_rows)
        # Output rows of this tile, registered: p0 changes at the end of FLUSH and the walker
        # takes `rows` in START, three cycles later at the earliest (it needs its inputs a
        # cycle before: PREP).
        rows = Signal(16)
        m.d.sync += rows.eq(min_of(d.tile_rows, d.out_height - p0))
        m.d.comb += [
            pw.pool.eq(d.pool), pw.out_int32.eq(d.out_int32), pw.upsample.eq(d.upsample),
            pw.width.eq(d.width), pw.height.eq(d.height), pw.out_width.eq(d.out_width),
            pw.c0.eq(c0), pw.rows.eq(rows),
        ]
        # E0: the bank address, registered: it fans out to every block RAM of both banks
        m.d.sync += self.bank_addr.eq(pw.addr)
        # Room for every window position in flight (bank read + requant) to land in the FIFO,
        # registered: a level a cycle old is at most one beat short of today's.
        room = Signal()
        m.d.sync += room.eq(ofifo.w_level + DRAIN_LATENCY + 6 < cfg.out_fifo_depth)
        # The last real sub-group of output group og (the last group may have fewer than
        # n_sub), registered: og changes at the end of FLUSH, two states before RUN, and the
        # walker takes it at its start. The walk ends there, so `step` is two registers ANDed
        # (it drives the clock enables of the walker's counters: with the padding test in it,
        # 12.1 ns routed).
        last_sub = Signal(range(n_sub))
        m.d.sync += last_sub.eq(min_of(d.out_groups - og * n_sub, n_sub) - 1)
        m.d.comb += pw.last_sub.eq(last_sub)
        with m.FSM():
            with m.State("WAIT"):
                with m.If(self.run & (p0 < d.out_height) & self.full.bit_select(slot, 1)):
                    m.next = "PREP"
            with m.State("PREP"):  # `rows` has seen this tile's p0; the walker sees `rows`
                m.next = "START"
            with m.State("START"):
                m.d.comb += pw.start.eq(1)
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.draining.eq(1)
                with m.If(~room):
                    m.d.comb += self.blocked.eq(1)
                with m.Else():
                    m.d.comb += pw.step.eq(1)
                    with m.If(pw.done):
                        m.d.sync += flush.eq(0)
                        m.next = "FLUSH"
            with m.State("FLUSH"):
                m.d.comb += self.draining.eq(1)
                m.d.sync += flush.eq(flush + 1)
                with m.If(flush == DRAIN_FLUSH - 1):
                    m.d.comb += self.free.eq(Mux(slot, 0b10, 0b01))
                    m.d.sync += [slot.eq(~slot), og.eq(og + 1)]
                    with m.If(og == og_last):
                        m.d.sync += [og.eq(0), p0.eq(p0_next), c0.eq(c0_next)]
                    m.next = "WAIT"
        self._datapath(m, d, pw, slot, ofifo)
        return m

    def _datapath(self, m, d, pw, slot, ofifo):
        cfg, n_sub, p_ic = self.cfg, self.n_sub, self.cfg.p_ic
        # E0 (the registered address) → E2 (BRAM_READ_LATENCY later): the bank words arrive;
        # the drained bank's is registered (E3). Then select the p_ic channels of the walker's
        # sub-group and their parameters (a mux over the sub-groups and the two slots, not over
        # all 4·p_oc words) into registers (E4): the bank words and the parameter tables are
        # spread over the chip, the requant unit's multipliers sit in the DSP rows, and the
        # select and that distance in one cycle were 12.5 ns. The selects steer hundreds of
        # bits: every output channel has its own copy of the slot at E2, every lane its own slot
        # and sub-group at E3.
        e = [Signal(data.StructLayout({"valid": 1, "pos": 1, "first": 1, "last": 1, "slot": 1,
                                       "sub": range(n_sub), "j": 2}), name=f"e{k}")
             for k in range(BRAM_READ_LATENCY + 3)]
        m.d.sync += e[0].eq(Cat(pw.step, pw.pos, pw.first, pw.last, slot, pw.sub, pw.j))
        m.d.sync += [e[k + 1].eq(e[k]) for k in range(len(e) - 1)]
        arrive, e_word, e_sel = e[BRAM_READ_LATENCY:]
        m.submodules.slot1 = slot1 = Replicated(cfg.p_oc)
        m.submodules.lane_sel = lane_sel = Replicated(p_ic, width=data.StructLayout({
            "slot": 1, "sub": len(arrive.sub)}))
        m.d.comb += [slot1.i.eq(e[BRAM_READ_LATENCY - 1].slot),
                     lane_sel.i.slot.eq(arrive.slot), lane_sel.i.sub.eq(arrive.sub)]
        word = Signal(data.ArrayLayout(signed(32), cfg.p_oc), reset_less=True)
        for o in range(cfg.p_oc):
            m.d.sync += word[o].eq(Mux(slot1.o[o], self.bank_data[1][o], self.bank_data[0][o]))
        m.submodules.requant = rq = RequantUnit(p_ic)
        m.d.comb += rq.valid_i.eq(e_sel.valid)
        param_beats = 2 * cfg.p_oc
        sel = Signal(data.ArrayLayout(RequantLane, p_ic), reset_less=True)  # E4
        for i in range(p_ic):
            slot2, sub = lane_sel.o[i].slot, lane_sel.o[i].sub  # lane i's copy of E3's selects

            def param(w, i=i, slot2=slot2, sub=sub):  # word `w` of channel sub·p_ic + i
                return Mux(slot2, *(
                    Array(self.params[s * param_beats + 2 * (g * p_ic + i) + w]
                          for g in range(n_sub))[sub] for s in (1, 0)))
            m.d.sync += [
                sel[i].acc.eq(Array(word[g * p_ic + i] for g in range(n_sub))[sub]),
                sel[i].shift.eq(param(0)[32:38]),
                sel[i].m_pos.eq(param(1)[:16]),
                sel[i].m_neg.eq(param(1)[16:32]),
            ]
        m.d.comb += rq.lane.eq(sel)
        # int32 output: beat j carries channels 2j, 2j+1. The beats and their tags wait beside
        # the requantization (the tags then go to the window max) and the window max.
        wide = Signal(cfg.data_width)
        m.d.comb += wide.eq(Cat(lane.acc for lane in sel).word_select(e_sel.j, cfg.data_width))
        tags = Signal(data.StructLayout({"valid": 1, "pos": 1, "first": 1, "last": 1}))
        m.d.comb += tags.eq(Cat(e_sel.valid, e_sel.pos, e_sel.first, e_sel.last))
        delayed = [tags]
        for _ in range(REQUANT_LATENCY + POOL_LATENCY):
            wide_q, tags_q = Signal.like(wide, reset_less=True), Signal.like(tags)
            m.d.sync += [wide_q.eq(wide), tags_q.eq(delayed[-1])]
            wide = wide_q
            delayed.append(tags_q)
        at_max, wide_valid = delayed[REQUANT_LATENCY], delayed[-1].valid
        m.submodules.pool_max = pm = PoolMax(p_ic)
        m.d.comb += [
            pm.valid.eq(rq.valid_o), pm.pos.eq(at_max.pos), pm.first.eq(at_max.first),
            pm.last.eq(at_max.last), pm.y.eq(rq.y),
        ]
        # the FIFO's write, registered: the pooling compares and the int32 select end here, and
        # the FIFO's block RAMs may sit far away
        m.d.sync += [ofifo.w_data.eq(Mux(d.out_int32, wide, pm.out)),
                     ofifo.w_en.eq(Mux(d.out_int32, wide_valid, pm.out_valid))]
