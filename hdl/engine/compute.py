"""The compute unit: pass sequencing, operands and the MAC array, feeding the accumulator banks."""

from amaranth import Cat, Module, Mux, ResetInserter, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.descriptor import Descriptor, Pool
from hdl.engine.accum import ACC_READ_LEAD, AccBeat, ReadAhead
from hdl.engine.loader import min_of
from hdl.engine.mac import MacArray, mac_latency
from hdl.fanout import Replicated
from hdl.window import WindowGen

__all__ = ["Compute"]


class Compute(wiring.Component):
    """Runs the passes of a layer (``docs/engine.md``, loop nest): for each tile, output-channel
    group, input-channel group and kernel tap, one pass of the tile's pixels through the
    ``p_oc × p_ic`` MAC array with that tap's weights, one pixel per cycle.

    A pass starts when the previous one ends, its input slot is ``slot_full``, its weights are in
    the shadow register (``p_oc`` beats of the ``weights`` stream) and — first pass of a group —
    its bank is ``bank_free``. Pipeline: A (window generator → buffer address) → B (buffer read)
    → X (operands registered: the pad value or the buffer word, and the weights) → the MAC array
    (:func:`mac_latency`) → the ``acc`` beat; ``read`` names the same pixel
    :data:`~hdl.engine.accum.ACC_READ_LEAD` cycles earlier. The weights of a pass wait in the
    shadow register until its first pixel is at X, three cycles after the start; the MAC array
    then takes them into the multipliers' own registers (``w_load``) and the shadow refills
    from the stream.

    The data registers are never reset; ``clear`` (a layer start) resets the sequencing.

    Parameters
    ----------
    cfg : EngineConfig

    Attributes
    ----------
    desc : In(Descriptor)
    run, clear : In(1)
    weights : In(stream.Signature(data_width))
    slot_full : In(2)
    slot_release : Out(2)
        Bit ``s`` pulses when the last pass reading input slot ``s`` ends.
    buf_addr : Out(range(2 * ibuf_depth))
    buf_data : In(data_width)
        The input buffer's word at ``buf_addr`` of the previous cycle.
    bank_free : In(2)
    bank_claim : Out(2)
        Bit ``b`` pulses when the first pass of a group into bank ``b`` starts.
    acc : Out(stream.Signature(AccBeat, always_ready=True))
    read : Out(stream.Signature(ReadAhead, always_ready=True))
    issuing, running, more, input_ready, weights_ready : Out(1)
        A real pixel enters the array; a pass runs; passes remain; the next pass's input slot
        is full; its weights are in the shadow register (for the performance counters).
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.sum_width = 16 + (cfg.p_ic - 1).bit_length()
        super().__init__({
            "desc": In(Descriptor), "run": In(1), "clear": In(1),
            "weights": In(stream.Signature(cfg.data_width)),
            "slot_full": In(2), "slot_release": Out(2),
            "buf_addr": Out(range(2 * cfg.ibuf_depth)), "buf_data": In(cfg.data_width),
            "bank_free": In(2), "bank_claim": Out(2),
            "acc": Out(stream.Signature(AccBeat(cfg.p_oc, self.sum_width, cfg.acc_depth),
                                        always_ready=True)),
            "read": Out(stream.Signature(ReadAhead(cfg.acc_depth), always_ready=True)),
            "issuing": Out(1), "running": Out(1), "more": Out(1), "input_ready": Out(1),
            "weights_ready": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        ctrl = Module()  # sequencing state: cleared at a layer start
        m.submodules.ctrl = ResetInserter(self.clear)(ctrl)
        cfg, d = self.cfg, self.desc
        p_ic, p_oc = cfg.p_ic, cfg.p_oc
        k3 = d.kernel3
        # "next" counters name the next pass to start; they advance when it starts.
        c0, c0w, og, ig = Signal(16), Signal(24), Signal(8), Signal(8)
        ky, kx, islot, bslot = Signal(2), Signal(2), Signal(), Signal()
        first = (ig == 0) & (ky == 0) & (kx == 0)
        kmax = Mux(k3, 2, 0)
        lastk = (ky == kmax) & (kx == kmax)
        # The tile's pixel count, two registered steps behind c0w. c0w changes only when a
        # pass starts and the next one starts at least min_pass >= 3 cycles later (and the first
        # pass waits for DDR), so npix is always settled when it is used.
        c1w, npix = Signal(25), Signal(24)
        ctrl.d.sync += [c1w.eq(c0w + d.tile_pix + Mux(d.pool == Pool.P2S1, d.width, 0)),
                        npix.eq(min_of(c1w, d.in_plane) - c0w)]
        shadow_valid = Signal()
        # Passes remain, registered (c0w changes only at a start, the next start is >= 4 cycles
        # later); true at a layer start, since every layer has a pixel.
        more = Signal(init=1)
        ctrl.d.sync += more.eq(c0w < d.in_plane)
        m.submodules.mac = mac = MacArray(p_ic, p_oc)
        start = Signal()
        # The shadow holds the next pass's weights once it is valid and no start is still
        # waiting to hand it to the array.
        handing_over = self._weights(m, ctrl, start, shadow_valid, mac)
        m.d.comb += [self.more.eq(more),
                     self.input_ready.eq(self.slot_full.bit_select(islot, 1)),
                     self.weights_ready.eq(shadow_valid & ~handing_over)]
        can_start = (self.more & self.input_ready & shadow_valid & ~handing_over
                     & (~first | self.bank_free.bit_select(bslot, 1)))
        # the running pass: the window generator walks the pixels; these tag it
        m.submodules.window = wg = ResetInserter(self.clear)(WindowGen(min_pass=cfg.min_pass))
        r_first, r_lastk, r_lastog, r_islot, r_bslot = (Signal(name=f"r_{n}") for n in
                                                        ("first", "lastk", "lastog", "islot",
                                                         "bslot"))
        m.d.comb += start.eq((~wg.running | wg.end) & self.run & can_start)
        m.d.comb += [
            wg.start.eq(start), wg.k3.eq(k3), wg.ky.eq(ky), wg.kx.eq(kx), wg.width.eq(d.width),
            wg.height.eq(d.height), wg.c0.eq(c0), wg.npix.eq(npix),
            self.issuing.eq(wg.valid), self.running.eq(wg.running),
        ]
        with m.If(wg.end & r_lastk):
            m.d.comb += self.slot_release.eq(Mux(r_islot, 0b10, 0b01))
        with m.If(start & first):
            m.d.comb += self.bank_claim.eq(Mux(bslot, 0b10, 0b01))
        with ctrl.If(start):
            ctrl.d.sync += [
                r_first.eq(first), r_lastk.eq(lastk), r_lastog.eq(lastk & (ig == d.in_groups - 1)),
                r_islot.eq(islot), r_bslot.eq(bslot), kx.eq(kx + 1),
            ]
            # advance the next-pass counters: kx, ky, ig, og, tile
            with ctrl.If(kx == kmax):
                ctrl.d.sync += [kx.eq(0), ky.eq(ky + 1)]
                with ctrl.If(ky == kmax):
                    ctrl.d.sync += [ky.eq(0), ig.eq(ig + 1), islot.eq(~islot)]
                    with ctrl.If(ig == d.in_groups - 1):
                        ctrl.d.sync += [ig.eq(0), og.eq(og + 1), bslot.eq(~bslot)]
                        with ctrl.If(og == d.og_passes - 1):
                            ctrl.d.sync += [og.eq(0), c0.eq(c0 + d.tile_conv_rows),
                                            c0w.eq(c0w + d.tile_pix)]
        # A → B: the buffer read; the pixel's tag travels beside the data from here on
        m.d.comb += self.buf_addr.eq(Cat(wg.addr[:len(self.buf_addr) - 1], r_islot))
        tag = Signal(data.StructLayout({"valid": 1, "first": 1, "last": 1, "bank": 1,
                                        "pix": range(cfg.acc_depth)}))
        b_pad = Signal()
        ctrl.d.sync += [tag.eq(Cat(wg.valid, r_first, r_lastog & wg.last_pix, r_bslot, wg.pix)),
                        b_pad.eq(wg.pad)]
        # X: the operands, registered in front of the multipliers (Ref: TN1267: the slice's
        # input registers follow, so only routing lies between these and the multiplier).
        x_vec = Signal(data.ArrayLayout(signed(8), p_ic), reset_less=True)
        m.d.sync += x_vec.eq(Mux(b_pad, Cat(*[d.pad_value] * p_ic), self.buf_data))
        m.d.comb += mac.x.eq(x_vec)
        tags = [tag]  # tags[k]: the tag of the pixel whose operands were at X k - 1 cycles ago
        for k in range(mac_latency(p_ic) + 1):
            tag_q = Signal.like(tag, name=f"tag_x{k}")
            ctrl.d.sync += tag_q.eq(tags[-1])
            tags.append(tag_q)
        read, out = tags[-1 - ACC_READ_LEAD], tags[-1]
        m.d.comb += [
            self.read.valid.eq(read.valid), self.read.p.pix.eq(read.pix),
            self.read.p.bank.eq(read.bank), self.read.p.first.eq(read.first),
            self.acc.valid.eq(out.valid), self.acc.p.sums.eq(mac.sums),
            self.acc.p.pix.eq(out.pix), self.acc.p.bank.eq(out.bank),
            self.acc.p.first.eq(out.first), self.acc.p.last.eq(out.last),
        ]
        return m

    def _weights(self, m, ctrl, start, shadow_valid, mac):
        """Shadow register: ``p_oc`` beats of the stream, held until the MAC array takes them
        with the pass's first pixel at X (``load``: the start delayed by three cycles, the
        A → B → X pipeline); it refills from that cycle on."""
        p_ic, p_oc = self.cfg.p_ic, self.cfg.p_oc
        w_layout = data.ArrayLayout(data.ArrayLayout(signed(8), p_ic), p_oc)
        shadow = Signal(w_layout, reset_less=True)
        fill = Signal(range(p_oc))
        started = Signal(3)  # the start, delayed by 1, 2 and 3 cycles
        ctrl.d.sync += started.eq(Cat(start, started[:2]))
        load = started[2]
        # the load drives the clock enables of all p_ic · p_oc multipliers: a copy per channel
        m.submodules.load = load_copies = Replicated(p_oc)
        m.d.comb += [load_copies.i.eq(started[1]), mac.w.eq(shadow),
                     mac.w_load.eq(load_copies.o), self.weights.ready.eq(~shadow_valid | load)]
        pop = self.weights.valid & self.weights.ready
        with m.If(pop):
            m.d.sync += shadow.as_value().word_select(fill, p_ic * 8).eq(self.weights.payload)
        with ctrl.If(load):
            ctrl.d.sync += shadow_valid.eq(0)
        with ctrl.If(pop):
            ctrl.d.sync += fill.eq(fill + 1)
            with ctrl.If(fill == p_oc - 1):
                ctrl.d.sync += [fill.eq(0), shadow_valid.eq(1)]
        return started.any()
