"""The convolution engine: one layer from a descriptor, DDR in, DDR out.

Dataflow (``docs/engine.md`` has the arithmetic behind these choices)::

    AXI R ──► input loader ──► input buffer (2 slots: one input-channel group of one row tile)
          └─► weight loader ─► weight FIFO ─► shadow weights ─► MAC array (p_oc × p_ic)
                            └► requant params (2 slots)           │ accumulate over (ic, ky, kx)
    AXI W ◄── writer ◄── output FIFO ◄── drain: requant + maxpool ◄── accumulator banks (2)

Loop nest (every unit walks the same nest with its own counters, so they run decoupled and are
synchronized only by full/free flags)::

    for tile in row tiles:                      # tile_rows output rows, all columns
      for og in output-channel groups (p_oc):   # accumulators double-buffered per og
        for ig in input-channel groups (p_ic):  # input buffer double-buffered per (tile, og, ig)
          for ky, kx in kernel:                 # one pass: fixed p_oc × p_ic weights
            for pixel in tile:                  # one pixel per cycle
              acc[pixel][0:p_oc] += W[og, ig, ky, kx] @ x[ig][pixel + (ky, kx)]
"""

from amaranth import Array, Cat, Const, Module, Mux, ResetInserter, Signal, signed
from amaranth.lib import data, fifo, memory, wiring
from amaranth.lib.wiring import In, Out, connect

from hdl.axi import AXI4Signature, ReadArbiter, WishboneSignature, burst_beats, last_burst
from hdl.descriptor import DESCRIPTOR_WORDS, Descriptor, EngineConfig, Pool
from hdl.mac import MacArray, mac_latency
from hdl.pool import PoolMax, PoolWalker
from hdl.requant import REQUANT_LATENCY, RequantUnit
from hdl.window import WindowGen

__all__ = ["COUNTERS", "CSR", "ERR", "Engine", "EngineCore"]

#: Performance counters, in CSR order (``docs/engine.md`` defines each).
COUNTERS = ("cycles", "mac_active", "stall_input", "stall_weights", "stall_requant",
            "stall_output", "bytes_read", "bytes_written")


class ERR:
    """Bits of the error-flags CSR."""

    READ_SLVERR = 1 << 0
    READ_DECERR = 1 << 1
    WRITE_SLVERR = 1 << 2
    WRITE_DECERR = 1 << 3


class CSR:
    """Word addresses of the CSRs on the Wishbone port (``docs/engine.md``, CSR map)."""

    CTRL = 0x00  #: write bit 0 = 1: start the layer in the descriptor registers
    STATUS = 0x01  #: bit 0 busy, bit 1 done (sticky until next start), bit 2 error
    ERROR = 0x02  #: ERR flags of the last layer (cleared at start)
    CONFIG = 0x03  #: p_ic [7:0], p_oc [15:8]
    DESC = 0x08  #: DESCRIPTOR_WORDS descriptor words
    COUNTERS = 0x20  #: the COUNTERS, one word each


def _min(a, b):
    return Mux(a < b, a, b)


class _Writer(wiring.Component):
    """Output FIFO → AXI write bursts, one contiguous run per (tile, output channel group).

    A burst's address is issued only when all its beats wait in the FIFO, so ``wvalid`` never
    drops inside a burst. On ``abort`` the writer finishes a burst whose address it has issued
    (Ref: AMBA AXI4 spec A3.3.1: the write data of an accepted address must follow) and stops.
    The run's address and length and each burst's length are registered one state ahead of their
    use (PREP, DATA), so no state chains more than two carry chains.
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
        cfg, d = self.cfg, self.desc
        beat_bytes = cfg.data_width // 8
        n_sub = cfg.p_oc // cfg.p_ic
        p0b = Signal(24)  # tile's first output beat within a channel-group plane
        p1b = Signal(25)  # p0b + tile_out_beats, before clipping to the plane
        og = Signal(8)
        sub = Signal(range(n_sub))
        g_base = Signal(32)  # group * out_plane
        addr = Signal(cfg.addr_width)
        remaining = Signal(24)
        count = Signal(8)
        blen = Signal(range(cfg.max_burst + 1))
        m.d.comb += [
            self.awsize.eq((beat_bytes).bit_length() - 1), self.awburst.eq(0b01),
            self.wstrb.eq(-1), self.bready.eq(1), self.wdata.eq(self.fifo_data),
            self.idle.eq(0),
        ]
        with m.FSM():
            with m.State("RUN"):
                m.d.comb += self.idle.eq(1)
                group = og * n_sub + sub
                with m.If(self.run & ~self.abort):
                    with m.If(p0b >= d.out_plane):
                        m.next = "DONE"
                    with m.Elif(group >= d.out_groups):
                        m.next = "NEXT"
                    with m.Else():
                        m.d.sync += [addr.eq(d.out_addr + (g_base + p0b) * beat_bytes),
                                     p1b.eq(p0b + d.tile_out_beats)]
                        m.next = "PREP"
            with m.State("PREP"):
                m.d.comb += self.idle.eq(1)
                m.d.sync += remaining.eq(_min(p1b, d.out_plane) - p0b)
                m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += self.idle.eq(1)
                m.d.sync += blen.eq(burst_beats(addr, remaining, cfg.max_burst, beat_bytes))
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
                        m.next = "DATA"
            with m.State("NEXT"):
                m.d.comb += self.idle.eq(1)
                m.d.sync += g_base.eq(g_base + d.out_plane)
                with m.If(sub == n_sub - 1):
                    m.d.sync += sub.eq(0)
                    with m.If(og == d.og_passes - 1):
                        m.d.sync += [og.eq(0), g_base.eq(0), p0b.eq(p0b + d.tile_out_beats)]
                    with m.Else():
                        m.d.sync += og.eq(og + 1)
                with m.Else():
                    m.d.sync += sub.eq(sub + 1)
                m.next = "RUN"
            with m.State("DONE"):
                m.d.comb += [self.done.eq(1), self.idle.eq(1)]
            with m.State("STOP"):
                m.d.comb += self.idle.eq(1)
        return m


class EngineCore(wiring.Component):
    """The engine without its CSR front end: descriptor and start in, AXI4 master out.

    Ports
    -----
    desc : In(Descriptor)
        Sampled on ``start``; may change while the layer runs.
    start : In(1)
        One-cycle pulse; ignored while ``busy``.
    busy, done : Out(1)
        ``done`` pulses for one cycle when the layer finished (or stopped on an error).
    error : Out(4)
        :class:`ERR` flags of the running/last layer, cleared by ``start``.
    counters : Out(ArrayLayout(32, len(COUNTERS)))
        Performance counters of the running/last layer, cleared by ``start``.
    axi : Out(AXI4Signature)
    """

    def __init__(self, cfg=None):
        self.cfg = cfg = cfg or EngineConfig()
        super().__init__({
            "desc": In(Descriptor), "start": In(1), "busy": Out(1), "done": Out(1),
            "error": Out(4), "counters": Out(data.ArrayLayout(32, len(COUNTERS))),
            "axi": Out(AXI4Signature(addr_width=cfg.addr_width, data_width=cfg.data_width)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        p_ic, p_oc, beat_bytes = cfg.p_ic, cfg.p_oc, cfg.data_width // 8
        n_sub = p_oc // p_ic
        axi = self.axi
        # `top` holds layer control, errors and counters. `m` holds the control state of every
        # unit and is reset as a whole the cycle after a layer is launched (so an aborted layer
        # leaves no state); the reset comes from a register, not from the CSR decode. `dp` holds
        # the wide data registers (weights, requant parameters, pipeline operands): their
        # validity travels in `m`, so they need no reset, which keeps it off ~6k flip-flops.
        top = Module()
        m = Module()
        dp = Module()

        # ---- layer control ------------------------------------------------------------------
        d = Signal(Descriptor)
        abort = Signal()
        run = Signal()
        launch = Signal()  # the accepted start pulse
        starting = Signal()  # the cycle after launch: the datapath is being reset
        top.d.comb += [launch.eq(self.start & ~self.busy),
                       run.eq(self.busy & ~abort & ~starting)]
        top.d.sync += starting.eq(launch)
        with top.If(launch):
            top.d.sync += [d.eq(self.desc), self.busy.eq(1), abort.eq(0), self.error.eq(0)]
        k3 = d.kernel3
        p2s1 = d.pool == Pool.P2S1
        # 2x2/1 pools recompute one conv row at each tile boundary
        extra_row = Mux(p2s1, d.width, 0)

        # ---- AXI read side: arbiter, outstanding count, routing -----------------------------
        m.submodules.arbiter = arb = ReadArbiter(2, addr_width=cfg.addr_width,
                                                 data_width=cfg.data_width)
        m.d.comb += [
            axi.arid.eq(arb.arid), axi.araddr.eq(arb.araddr), axi.arlen.eq(arb.arlen),
            axi.arsize.eq(arb.arsize), axi.arburst.eq(arb.arburst), axi.arvalid.eq(arb.arvalid),
            arb.arready.eq(axi.arready),
            # Every read is issued only into reserved space, so read data is always accepted.
            axi.rready.eq(1),
        ]
        rd_outstanding = Signal(16)
        ar_fire = axi.arvalid & axi.arready
        r_fire = axi.rvalid & axi.rready
        r_end = r_fire & axi.rlast
        m.d.sync += rd_outstanding.eq(rd_outstanding + ar_fire - r_end)
        r_in = r_fire & (axi.rid == 0)
        r_w = r_fire & (axi.rid == 1)
        read_err = Mux(r_fire & axi.rresp[1], Mux(axi.rresp[0], ERR.READ_DECERR,
                                                  ERR.READ_SLVERR), 0)

        # ---- input buffer: 2 slots of ibuf_depth pixels × p_ic channels ---------------------
        m.submodules.ibuf = ibuf = memory.Memory(shape=cfg.data_width, depth=2 * cfg.ibuf_depth,
                                                 init=[])
        ibuf_w = ibuf.write_port()
        ibuf_r = ibuf.read_port()
        islot_busy = Signal(2)  # loader owns or filled the slot; cleared when compute releases
        islot_full = Signal(2)  # all of the slot's data arrived
        islot_release = Signal(2)
        islot_claim = Signal(2)
        islot_fill = Signal(2)
        m.d.sync += [islot_busy.eq((islot_busy | islot_claim) & ~islot_release),
                     islot_full.eq((islot_full | islot_fill) & ~islot_release)]

        # Input loader: per (tile, og, ig), the tile's input rows of group ig (contiguous in DDR).
        # The run's bounds take three registered steps (SLOT, SPAN1, SPAN2) and each burst's
        # length one (CALC): at most two carry chains per cycle.
        m.submodules.in_tags = in_tags = fifo.SyncFIFOBuffered(width=1, depth=16)
        ireq = arb.req0
        li_c0w = Signal(24)  # tile's first conv row × W
        li_c0 = Signal(16)
        li_og = Signal(8)
        li_ig = Signal(8)
        li_igbase = Signal(32)  # ig × in_plane
        li_slot = Signal()
        li_addr = Signal(cfg.addr_width)
        li_rem = Signal(24)
        li_i0w = Signal(24)  # first input row × W (the halo row above the tile, if any)
        li_end = Signal(25)  # conv end, then input end, before clipping to the plane
        li_blen = Signal(range(cfg.max_burst + 1))
        li_last = Signal()
        with m.FSM(name="in_loader"):
            with m.State("SLOT"):
                with m.If(run & (li_c0w < d.in_plane) & ~islot_busy.bit_select(li_slot, 1)):
                    m.d.comb += islot_claim.eq(Mux(li_slot, 0b10, 0b01))
                    m.d.sync += [li_i0w.eq(Mux(k3 & (li_c0 != 0), li_c0w - d.width, li_c0w)),
                                 li_end.eq(li_c0w + d.tile_pix + extra_row)]
                    m.next = "SPAN1"
            with m.State("SPAN1"):
                m.d.sync += [li_end.eq(_min(li_end, d.in_plane) + Mux(k3, d.width, 0)),
                             li_addr.eq(d.in_addr + (li_igbase + li_i0w) * beat_bytes)]
                m.next = "SPAN2"
            with m.State("SPAN2"):
                m.d.sync += li_rem.eq(_min(li_end, d.in_plane) - li_i0w)
                m.next = "CALC"
            with m.State("CALC"):
                m.d.sync += [
                    li_blen.eq(burst_beats(li_addr, li_rem, cfg.max_burst, beat_bytes)),
                    li_last.eq(last_burst(li_addr, li_rem, cfg.max_burst, beat_bytes)),
                ]
                m.next = "BURST"
            with m.State("BURST"):
                m.d.comb += [
                    ireq.valid.eq(run & in_tags.w_rdy), ireq.addr.eq(li_addr),
                    ireq.len.eq(li_blen - 1),
                    in_tags.w_en.eq(ireq.ready), in_tags.w_data.eq(li_last),
                ]
                with m.If(ireq.ready):
                    m.d.sync += [li_addr.eq(li_addr + li_blen * beat_bytes),
                                 li_rem.eq(li_rem - li_blen)]
                    m.next = "CALC"
                    with m.If(li_last):
                        m.d.sync += [li_slot.eq(~li_slot), li_igbase.eq(li_igbase + d.in_plane),
                                     li_ig.eq(li_ig + 1)]
                        with m.If(li_ig == d.in_groups - 1):
                            m.d.sync += [li_ig.eq(0), li_igbase.eq(0), li_og.eq(li_og + 1)]
                            with m.If(li_og == d.og_passes - 1):
                                m.d.sync += [li_og.eq(0), li_c0.eq(li_c0 + d.tile_conv_rows),
                                             li_c0w.eq(li_c0w + d.tile_pix)]
                        m.next = "SLOT"
        # Receive side: data lands at the running pointer of the slot being filled.
        ri_slot = Signal()
        ri_ptr = Signal(range(cfg.ibuf_depth))
        m.d.comb += [
            ibuf_w.addr.eq(Cat(ri_ptr, ri_slot)), ibuf_w.data.eq(axi.rdata), ibuf_w.en.eq(r_in),
            in_tags.r_en.eq(r_in & axi.rlast),
        ]
        with m.If(r_in):
            m.d.sync += ri_ptr.eq(ri_ptr + 1)
            with m.If(axi.rlast & in_tags.r_data[0]):
                m.d.sync += [ri_slot.eq(~ri_slot), ri_ptr.eq(0)]
                m.d.comb += islot_fill.eq(Mux(ri_slot, 0b10, 0b01))

        # ---- weight loader: requant params then weights, per (tile, og) ---------------------
        m.submodules.w_tags = w_tags = fifo.SyncFIFOBuffered(width=1, depth=16)
        m.submodules.wfifo = wfifo = fifo.SyncFIFOBuffered(width=cfg.data_width,
                                                                depth=cfg.weight_fifo_depth)
        wreq = arb.req1
        pslot_busy = Signal(2)  # loader filled (or fills) the slot; the drain frees it
        pslot_release = Signal(2)
        pslot_claim = Signal(2)
        m.d.sync += pslot_busy.eq((pslot_busy | pslot_claim) & ~pslot_release)
        lw_c0w = Signal(24)
        lw_og = Signal(8)
        lw_slot = Signal()
        lw_paddr = Signal(cfg.addr_width)  # next requant-table / weight-stream burst
        lw_waddr = Signal(cfg.addr_width)
        lw_rem = Signal(24)
        lw_blen = Signal(range(cfg.max_burst + 1))
        lw_last = Signal()
        credits = Signal(range(cfg.weight_fifo_depth + 1), init=cfg.weight_fifo_depth)
        wf_pop = Signal()
        param_beats = 2 * p_oc
        credit_take = Signal(range(cfg.weight_fifo_depth + 1))
        m.d.sync += credits.eq(credits - credit_take + wf_pop)

        def calc(addr):  # CALC states: the next burst's length, registered
            m.d.sync += [lw_blen.eq(burst_beats(addr, lw_rem, cfg.max_burst, beat_bytes)),
                         lw_last.eq(last_burst(addr, lw_rem, cfg.max_burst, beat_bytes))]

        with m.FSM(name="w_loader"):
            with m.State("SLOT"):
                with m.If(run & (lw_c0w < d.in_plane) & ~pslot_busy.bit_select(lw_slot, 1)):
                    m.d.comb += pslot_claim.eq(Mux(lw_slot, 0b10, 0b01))
                    m.d.sync += lw_rem.eq(param_beats)
                    with m.If(lw_og == 0):  # each tile re-reads the table and the weights
                        m.d.sync += [lw_paddr.eq(d.param_addr), lw_waddr.eq(d.w_addr)]
                    m.next = "PCALC"
            with m.State("PCALC"):
                calc(lw_paddr)
                m.next = "PARAMS"
            with m.State("PARAMS"):
                m.d.comb += [
                    wreq.valid.eq(run & w_tags.w_rdy), wreq.addr.eq(lw_paddr),
                    wreq.len.eq(lw_blen - 1), w_tags.w_en.eq(wreq.ready), w_tags.w_data.eq(1),
                ]
                with m.If(wreq.ready):
                    m.d.sync += [lw_paddr.eq(lw_paddr + lw_blen * beat_bytes),
                                 lw_rem.eq(lw_rem - lw_blen)]
                    m.next = "PCALC"
                    with m.If(lw_last):
                        m.d.sync += lw_rem.eq(d.og_weight_beats)
                        m.next = "WCALC"
            with m.State("WCALC"):
                calc(lw_waddr)
                m.next = "WEIGHTS"
            with m.State("WEIGHTS"):
                m.d.comb += [
                    wreq.valid.eq(run & w_tags.w_rdy & (credits >= lw_blen)),
                    wreq.addr.eq(lw_waddr), wreq.len.eq(lw_blen - 1),
                    w_tags.w_en.eq(wreq.ready), w_tags.w_data.eq(0),
                    credit_take.eq(Mux(wreq.ready, lw_blen, 0)),
                ]
                with m.If(wreq.ready):
                    m.d.sync += [lw_waddr.eq(lw_waddr + lw_blen * beat_bytes),
                                 lw_rem.eq(lw_rem - lw_blen)]
                    m.next = "WCALC"
                    with m.If(lw_last):
                        m.d.sync += [lw_slot.eq(~lw_slot), lw_og.eq(lw_og + 1)]
                        with m.If(lw_og == d.og_passes - 1):
                            m.d.sync += [lw_og.eq(0), lw_c0w.eq(lw_c0w + d.tile_pix)]
                        m.next = "SLOT"
        # Receive: params into the slot's registers, weights into the FIFO.
        params = Array(Signal(cfg.data_width, name=f"param{i}") for i in range(2 * param_beats))
        rw_slot = Signal()
        rw_idx = Signal(range(param_beats))
        m.d.comb += [
            w_tags.r_en.eq(r_w & axi.rlast),
            wfifo.w_data.eq(axi.rdata), wfifo.w_en.eq(r_w & ~w_tags.r_data[0]),
        ]
        param_write = r_w & w_tags.r_data[0]
        with dp.If(param_write):
            dp.d.sync += params[Cat(rw_idx, rw_slot)].eq(axi.rdata)
        with m.If(param_write):
            m.d.sync += rw_idx.eq(rw_idx + 1)
            with m.If(rw_idx == param_beats - 1):
                m.d.sync += [rw_idx.eq(0), rw_slot.eq(~rw_slot)]

        # ---- shadow weights ------------------------------------------------------------------
        w_layout = data.ArrayLayout(data.ArrayLayout(signed(8), p_ic), p_oc)
        shadow = Signal(w_layout)
        active = Signal(w_layout)
        shadow_valid = Signal()
        fill_idx = Signal(range(p_oc))
        m.d.comb += [wfifo.r_en.eq(~shadow_valid), wf_pop.eq(~shadow_valid & wfifo.r_rdy)]
        with dp.If(wf_pop):
            dp.d.sync += shadow.as_value().word_select(fill_idx, p_ic * 8).eq(wfifo.r_data)
        with m.If(wf_pop):
            m.d.sync += fill_idx.eq(fill_idx + 1)
            with m.If(fill_idx == p_oc - 1):
                m.d.sync += [fill_idx.eq(0), shadow_valid.eq(1)]

        # ---- accumulator banks ----------------------------------------------------------------
        acc_layout = data.ArrayLayout(signed(32), p_oc)
        banks = []
        for b in range(2):
            bank = memory.Memory(shape=acc_layout, depth=cfg.acc_depth, init=[])
            m.submodules[f"bank{b}"] = bank
            banks.append((bank.read_port(), bank.write_port()))
        FREE, COMPUTE, FULL = 0, 1, 2
        bank_state = Array(Signal(2, name=f"bank_state{b}") for b in range(2))

        # ---- compute: pass sequencing ------------------------------------------------------
        # "next" counters name the next pass to start; they advance when it starts.
        n_c0 = Signal(16)
        n_c0w = Signal(24)
        n_og = Signal(8)
        n_ig = Signal(8)
        n_ky = Signal(2)
        n_kx = Signal(2)
        n_islot = Signal()
        n_bslot = Signal()
        n_more = n_c0w < d.in_plane
        n_first = (n_ig == 0) & (n_ky == 0) & (n_kx == 0)
        kmax = Mux(k3, 2, 0)
        n_lastk = (n_ky == kmax) & (n_kx == kmax)
        # The tile's pixel count, two registered steps behind n_c0w. n_c0w changes only when a
        # pass starts and the next one starts at least min_pass >= 3 cycles later (and the first
        # pass waits for DDR), so n_npix is always settled when it is used.
        n_c1w = Signal(25)
        n_npix = Signal(24)
        m.d.sync += [n_c1w.eq(n_c0w + d.tile_pix + extra_row),
                     n_npix.eq(_min(n_c1w, d.in_plane) - n_c0w)]
        ibuf_ready = islot_full.bit_select(n_islot, 1)
        bank_free = bank_state[n_bslot] == FREE
        can_start = n_more & ibuf_ready & shadow_valid & (~n_first | bank_free)

        # running pass: the window generator walks the pixels; these tag it
        m.submodules.window = wg = WindowGen(min_pass=cfg.min_pass)
        r_first = Signal()
        r_lastk = Signal()
        r_lastog = Signal()
        r_islot = Signal()
        r_bslot = Signal()
        running = wg.running
        # The new pass's weights reach the multipliers' input registers two cycles after the
        # pass starts, when its first pixel does (stage X below): `active` takes the shadow
        # one cycle after the start, `active_x` follows it one cycle later.
        swap = Signal()
        m.d.sync += swap.eq(0)
        with dp.If(swap):
            dp.d.sync += active.eq(shadow)
        start_pass = (~running | wg.end) & run & can_start
        m.d.comb += [
            wg.start.eq(start_pass), wg.k3.eq(k3), wg.ky.eq(n_ky), wg.kx.eq(n_kx),
            wg.width.eq(d.width), wg.height.eq(d.height), wg.c0.eq(n_c0), wg.npix.eq(n_npix),
        ]
        with m.If(wg.end & r_lastk):
            m.d.comb += islot_release.eq(Mux(r_islot, 0b10, 0b01))
        with m.If(start_pass):
            m.d.sync += [
                swap.eq(1), shadow_valid.eq(0), r_first.eq(n_first), r_lastk.eq(n_lastk),
                r_lastog.eq(n_lastk & (n_ig == d.in_groups - 1)),
                r_islot.eq(n_islot), r_bslot.eq(n_bslot),
            ]
            with m.If(n_first):
                m.d.sync += bank_state[n_bslot].eq(COMPUTE)
            # advance the next-pass counters: kx, ky, ig, og, tile
            m.d.sync += n_kx.eq(n_kx + 1)
            with m.If(n_kx == kmax):
                m.d.sync += [n_kx.eq(0), n_ky.eq(n_ky + 1)]
                with m.If(n_ky == kmax):
                    m.d.sync += [n_ky.eq(0), n_ig.eq(n_ig + 1), n_islot.eq(~n_islot)]
                    with m.If(n_ig == d.in_groups - 1):
                        m.d.sync += [n_ig.eq(0), n_og.eq(n_og + 1), n_bslot.eq(~n_bslot)]
                        with m.If(n_og == d.og_passes - 1):
                            m.d.sync += [n_og.eq(0), n_c0.eq(n_c0 + d.tile_conv_rows),
                                         n_c0w.eq(n_c0w + d.tile_pix)]

        # ---- compute: A (address) → B (buffer read) → X (operands) → MAC array → S (add to
        # the bank word) → W (write the bank). Every stage is registered; the tags below travel
        # beside the data in `m`.
        tag_layout = data.StructLayout({"valid": 1, "first": 1, "last": 1, "bslot": 1,
                                        "pix": range(cfg.acc_depth)})
        m.d.comb += ibuf_r.addr.eq(Cat(wg.addr[:len(ibuf_r.addr) - 1], r_islot))
        b_tag = Signal(tag_layout)
        b_pad = Signal()
        m.d.sync += [
            b_tag.valid.eq(wg.valid), b_tag.first.eq(r_first),
            b_tag.last.eq(r_lastog & wg.last_pix), b_tag.bslot.eq(r_bslot), b_tag.pix.eq(wg.pix),
            b_pad.eq(wg.pad),
        ]
        # X: the operands, registered in front of the multipliers (Ref: TN1267: the slice's
        # input registers follow, so only routing lies between these and the multiplier).
        x_vec = Signal(data.ArrayLayout(signed(8), p_ic))
        active_x = Signal(w_layout)
        dp.d.sync += [x_vec.eq(Mux(b_pad, Cat(*[d.pad_value] * p_ic), ibuf_r.data)),
                      active_x.eq(active)]
        dp.submodules.mac = mac = MacArray(p_ic, p_oc)
        m.d.comb += [mac.x.eq(x_vec), mac.w.eq(active_x)]
        # tags[k]: the tag of the pixel whose operands were at X k cycles ago
        tags = [b_tag]
        for k in range(mac_latency(p_ic) + 2):
            tag = Signal(tag_layout, name=f"tag_x{k}")
            m.d.sync += tag.eq(tags[-1])
            tags.append(tag)
        s_tag, w_tag = tags[-2], tags[-1]
        # The bank word is read two cycles before the sums arrive and registered (its output
        # goes straight to a flip-flop), then added at S and written at W: a pixel's write
        # lands three cycles after its read, before the next pass (>= min_pass = 4 cycles)
        # reads it again.
        read_tag, rdata_tag = tags[-4], tags[-3]
        bank_rdata = Signal(acc_layout)
        acc_new = Signal(acc_layout)
        dp.d.sync += bank_rdata.eq(Mux(rdata_tag.bslot, banks[1][0].data.as_value(),
                                       banks[0][0].data.as_value()))
        for o in range(p_oc):
            # bias of output channel o of the og in slot s: params word 2·o of slot s
            bias = Mux(s_tag.bslot, params[param_beats + 2 * o][:32], params[2 * o][:32])
            acc_in = Mux(s_tag.first, bias.as_signed(), bank_rdata[o])
            dp.d.sync += acc_new[o].eq(acc_in + mac.sums[o])
        for b, (_, wr) in enumerate(banks):
            m.d.comb += [wr.addr.eq(w_tag.pix), wr.data.eq(acc_new),
                         wr.en.eq(w_tag.valid & (w_tag.bslot == b))]
        with m.If(w_tag.valid & w_tag.last):
            m.d.sync += bank_state[w_tag.bslot].eq(FULL)

        # ---- drain: bank → requant → maxpool → output FIFO -------------------------------
        m.submodules.ofifo = ofifo = fifo.SyncFIFOBuffered(width=cfg.data_width,
                                                                depth=cfg.out_fifo_depth)
        m.submodules.requant = rq = RequantUnit(p_ic)
        dr_p0 = Signal(16)  # tile's first output row
        dr_c0 = Signal(16)
        dr_og = Signal(8)
        dr_slot = Signal()
        dr_flush = Signal(range(REQUANT_LATENCY + 4))
        # Output rows of this tile, registered: dr_p0 changes at the end of FLUSH and the walk
        # starts from WAIT, one cycle later at the earliest.
        dr_rows = Signal(16)
        m.d.sync += dr_rows.eq(_min(d.tile_rows, d.out_height - dr_p0))
        m.submodules.pool_walker = pw = PoolWalker(n_sub=n_sub)
        m.d.comb += [
            pw.pool.eq(d.pool), pw.out_int32.eq(d.out_int32), pw.width.eq(d.width),
            pw.height.eq(d.height), pw.out_width.eq(d.out_width), pw.c0.eq(dr_c0),
            pw.rows.eq(dr_rows),
        ]
        # Room for every window position in flight (bank read + requant) to land in the FIFO.
        dr_room = ofifo.w_level + REQUANT_LATENCY + 8 < cfg.out_fifo_depth
        drain_blocked = Signal()
        draining = Signal()
        for b, (rd, _) in enumerate(banks):
            m.d.comb += rd.addr.eq(Mux((bank_state[b] == FULL) & (dr_slot == b), pw.addr,
                                       read_tag.pix))
        with m.FSM(name="drain"):
            with m.State("WAIT"):
                with m.If(run & (dr_p0 < d.out_height) & (bank_state[dr_slot] == FULL)):
                    m.d.comb += pw.start.eq(1)
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += draining.eq(1)
                with m.If((dr_og * n_sub + pw.sub) >= d.out_groups):  # padding sub-group
                    m.next = "FLUSH"
                    m.d.sync += dr_flush.eq(0)
                with m.Elif(~dr_room):
                    m.d.comb += drain_blocked.eq(1)
                with m.Else():
                    m.d.comb += pw.step.eq(1)
                    with m.If(pw.done):
                        m.d.sync += dr_flush.eq(0)
                        m.next = "FLUSH"
            with m.State("FLUSH"):
                m.d.comb += draining.eq(1)
                m.d.sync += dr_flush.eq(dr_flush + 1)
                with m.If(dr_flush == REQUANT_LATENCY + 3):
                    m.d.sync += [bank_state[dr_slot].eq(FREE), dr_slot.eq(~dr_slot),
                                 dr_og.eq(dr_og + 1)]
                    m.d.comb += pslot_release.eq(Mux(dr_slot, 0b10, 0b01))
                    with m.If(dr_og == d.og_passes - 1):
                        m.d.sync += [dr_og.eq(0), dr_p0.eq(dr_p0 + d.tile_rows),
                                     dr_c0.eq(dr_c0 + d.tile_conv_rows)]
                    m.next = "WAIT"
        # E1: bank data; select the p_ic channels of the walker's sub-group and their
        # parameters (a mux over the n_sub sub-groups and the two slots, not over all 2·p_oc
        # parameter words); the requant unit registers them on entry.
        e1_valid, e1_pos, e1_first, e1_last, e1_slot = (Signal(name=f"e1_{n}") for n in
                                                        ("valid", "pos", "first", "last", "slot"))
        e1_sub = Signal.like(pw.sub)
        e1_j = Signal(2)
        m.d.sync += [
            e1_valid.eq(pw.step), e1_pos.eq(pw.pos), e1_first.eq(pw.first),
            e1_last.eq(pw.last), e1_slot.eq(dr_slot), e1_sub.eq(pw.sub), e1_j.eq(pw.j),
        ]
        e1_acc = Mux(e1_slot, banks[1][0].data.as_value(), banks[0][0].data.as_value())
        e1_lanes = e1_acc.word_select(e1_sub, 32 * p_ic)
        m.d.comb += rq.valid_i.eq(e1_valid)
        for i in range(p_ic):
            def param(word, i=i):  # params word `word` of channel sub·p_ic + i, current slot
                return Mux(e1_slot, *(
                    Array(params[slot * param_beats + 2 * (sub * p_ic + i) + word]
                          for sub in range(n_sub))[e1_sub] for slot in (1, 0)))
            m.d.comb += [
                rq.lane[i].acc.eq(e1_lanes[32 * i:32 * i + 32]),
                rq.lane[i].shift.eq(param(0)[32:38]),
                rq.lane[i].m_pos.eq(param(1)[:16]),
                rq.lane[i].m_neg.eq(param(1)[16:32]),
            ]
        # int32 output: beat j carries channels 2j, 2j+1; delayed to line up with requant.
        wide = Signal(cfg.data_width)
        m.d.comb += wide.eq(e1_lanes.word_select(e1_j, cfg.data_width))
        pool_tags = Signal(3)
        m.d.comb += pool_tags.eq(Cat(e1_pos, e1_first, e1_last))
        for _ in range(REQUANT_LATENCY):
            wide_q, tags_q = Signal.like(wide), Signal.like(pool_tags)
            dp.d.sync += wide_q.eq(wide)
            m.d.sync += tags_q.eq(pool_tags)
            wide, pool_tags = wide_q, tags_q
        m.submodules.pool_max = pm = PoolMax(p_ic)
        m.d.comb += [
            pm.valid.eq(rq.valid_o), pm.pos.eq(pool_tags[0]), pm.first.eq(pool_tags[1]),
            pm.last.eq(pool_tags[2]), pm.y.eq(rq.y),
            ofifo.w_data.eq(Mux(d.out_int32, wide, pm.out)),
            ofifo.w_en.eq(Mux(d.out_int32, rq.valid_o, pm.out_valid)),
        ]

        # ---- writer ------------------------------------------------------------------------
        m.submodules.writer = writer = _Writer(cfg)
        for name in ("awid", "awaddr", "awlen", "awsize", "awburst", "awvalid", "wdata", "wstrb",
                     "wlast", "wvalid", "bready"):
            m.d.comb += getattr(axi, name).eq(getattr(writer, name))
        for name in ("awready", "wready", "bid", "bresp", "bvalid"):
            m.d.comb += getattr(writer, name).eq(getattr(axi, name))
        m.d.comb += [
            writer.desc.eq(d), writer.run.eq(run), writer.abort.eq(abort),
            writer.fifo_data.eq(ofifo.r_data), writer.fifo_level.eq(ofifo.r_level),
            ofifo.r_en.eq(writer.fifo_pop),
        ]
        wr_outstanding = Signal(16)
        aw_fire = axi.awvalid & axi.awready
        b_fire = axi.bvalid & axi.bready
        m.d.sync += wr_outstanding.eq(wr_outstanding + aw_fire - b_fire)
        write_err = Mux(b_fire & axi.bresp[1], Mux(axi.bresp[0], ERR.WRITE_DECERR,
                                                   ERR.WRITE_SLVERR), 0)
        with top.If(self.busy & ((read_err | write_err) != 0)):
            top.d.sync += [self.error.eq(self.error | read_err | write_err), abort.eq(1)]

        # ---- completion ------------------------------------------------------------------
        quiet = (rd_outstanding == 0) & (wr_outstanding == 0) & ~axi.arvalid
        finished = self.busy & ~launch & ~starting & (
            (writer.done & (wr_outstanding == 0)) | (abort & quiet & writer.idle))
        with top.If(finished):
            top.d.sync += self.busy.eq(0)
            top.d.comb += self.done.eq(1)

        # ---- performance counters (docs/engine.md defines the attribution) -----------------
        cnt = self.counters
        with top.If(launch):
            top.d.sync += cnt.eq(0)
        with top.Elif(self.busy):
            top.d.sync += cnt[0].eq(cnt[0] + 1)
            with top.If(wg.valid):
                top.d.sync += cnt[1].eq(cnt[1] + 1)
            with top.Elif(~running & n_more):
                with top.If(~ibuf_ready):
                    top.d.sync += cnt[2].eq(cnt[2] + 1)
                with top.Elif(~shadow_valid):
                    top.d.sync += cnt[3].eq(cnt[3] + 1)
                with top.Elif(drain_blocked):
                    top.d.sync += cnt[5].eq(cnt[5] + 1)
                with top.Else():
                    top.d.sync += cnt[4].eq(cnt[4] + 1)
            with top.Elif(~running):
                # after the last pass: draining (requant) or blocked by the writer (output)
                with top.If(draining & ~drain_blocked):
                    top.d.sync += cnt[4].eq(cnt[4] + 1)
                with top.Else():
                    top.d.sync += cnt[5].eq(cnt[5] + 1)
            with top.If(r_fire):
                top.d.sync += cnt[6].eq(cnt[6] + beat_bytes)
            with top.If(axi.wvalid & axi.wready):
                top.d.sync += cnt[7].eq(cnt[7] + beat_bytes)

        top.submodules.datapath = ResetInserter(starting)(m)
        top.submodules.data = dp
        return top


class Engine(wiring.Component):
    """The engine with its CSR front end (Wishbone slave, ``CSR`` word map) and AXI4 master.

    Ports
    -----
    csr : In(WishboneSignature(addr_width=8, data_width=32))
    axi : Out(AXI4Signature)
    irq : Out(1)
        High while the done bit of STATUS is set.
    """

    def __init__(self, cfg=None):
        self.cfg = cfg = cfg or EngineConfig()
        super().__init__({
            "csr": In(WishboneSignature(addr_width=8, data_width=32)),
            "axi": Out(AXI4Signature(addr_width=cfg.addr_width, data_width=cfg.data_width)),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = EngineCore(self.cfg)
        connect(m, wiring.flipped(self.axi), core.axi)
        desc_words = Array(Signal(32, name=f"desc{i}") for i in range(DESCRIPTOR_WORDS))
        done = Signal()
        m.d.comb += [core.desc.eq(Cat(*desc_words)), self.irq.eq(done)]
        with m.If(core.done):
            m.d.sync += done.eq(1)
        with m.If(core.start):
            m.d.sync += done.eq(0)
        bus = self.csr
        m.d.sync += bus.ack.eq(0)
        with m.If(bus.cyc & bus.stb & ~bus.ack):
            m.d.sync += bus.ack.eq(1)
            with m.If(bus.we):
                with m.If(bus.adr == CSR.CTRL):
                    m.d.comb += core.start.eq(bus.dat_w[0])
                for i in range(DESCRIPTOR_WORDS):
                    with m.If(bus.adr == CSR.DESC + i):
                        m.d.sync += desc_words[i].eq(bus.dat_w)
            with m.Else():
                with m.Switch(bus.adr):
                    with m.Case(CSR.STATUS):
                        m.d.sync += bus.dat_r.eq(Cat(core.busy, done, core.error != 0))
                    with m.Case(CSR.ERROR):
                        m.d.sync += bus.dat_r.eq(core.error)
                    with m.Case(CSR.CONFIG):
                        m.d.sync += bus.dat_r.eq(Cat(Const(self.cfg.p_ic, 8),
                                                     Const(self.cfg.p_oc, 8)))
                    for i in range(DESCRIPTOR_WORDS):
                        with m.Case(CSR.DESC + i):
                            m.d.sync += bus.dat_r.eq(desc_words[i])
                    for i in range(len(COUNTERS)):
                        with m.Case(CSR.COUNTERS + i):
                            m.d.sync += bus.dat_r.eq(core.counters[i])
                    with m.Default():
                        m.d.sync += bus.dat_r.eq(0)
        return m
