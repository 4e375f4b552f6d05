"""The compute unit: pass sequencing, operands and the MAC array, feeding the accumulator banks."""

from amaranth import Cat, Module, Mux, ResetInserter, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.descriptor import Descriptor, Pool, last_index, unit_descriptor
from hdl.engine.accum import ACC_READ_LEAD, AccBeat, ReadAhead
from hdl.engine.loader import IBUF_READ_LATENCY, advanced, min_of
from hdl.engine.mac import OPERAND_LATENCY, MacArray, mac_latency
from hdl.fanout import Replicated
from hdl.window import WindowGen

__all__ = ["Compute"]


class Compute(wiring.Component):
    """Runs the passes of a layer (``docs/engine.md``, loop nest): for each tile, output-channel
    group, input-channel group and kernel tap, one pass of the tile's pixels through the
    ``p_oc × p_ic`` MAC array with that tap's weights, one pixel per cycle.

    A pass starts when the previous one ends, its input chunk is whole (``ready``, see
    :class:`~hdl.engine.loader.InputLoader`: chunk ``ig`` of the unit in its half when resident,
    else the unit's only chunk), its weights are in the shadow register (``p_oc`` beats of the
    ``weights`` stream) and — first pass of a group — its bank is ``bank_free``. Pipeline: A
    (window generator → buffer address) → the buffer read
    (:data:`~hdl.engine.loader.IBUF_READ_LATENCY`, from the address registered) → X (operands
    registered: the pad value or the buffer word) → the MAC array
    (:func:`mac_latency`) → the ``acc`` beat; ``read`` names the same pixel
    :data:`~hdl.engine.accum.ACC_READ_LEAD` cycles earlier. The weights of a pass wait in the
    shadow register until its first pixel is in the MAC array's operand copies
    (:data:`~hdl.engine.mac.OPERAND_LATENCY` after X); the MAC array then takes them into the
    multipliers' own registers (``w_load``) and the shadow refills from the stream.

    The data registers are never reset; ``clear`` (a layer start) resets the sequencing.

    Parameters
    ----------
    cfg : EngineConfig

    Attributes
    ----------
    desc : In(Descriptor)
        The layer; stable from :data:`~hdl.descriptor.DESC_LATENCY` cycles before ``run`` rises
        until the layer ends (:func:`hdl.descriptor.last_index`).
    run, clear : In(1)
    weights : In(stream.Signature(data_width))
    ready : In(ArrayLayout(8, 2))
        Whole chunks of the unit in each half of the input buffer.
    release : Out(2)
        Bit ``h`` pulses when the last pass reading the unit in half ``h`` ends.
    buf_addr : Out(range(ibuf_depth))
    buf_data : In(data_width)
        The input buffer's word at ``buf_addr`` of ``IBUF_READ_LATENCY`` cycles before.
    bank_free : In(2)
    bank_claim : Out(2)
        Bit ``b`` pulses when the first pass of a group into bank ``b`` starts.
    acc : Out(stream.Signature(AccBeat, always_ready=True))
    read : Out(stream.Signature(ReadAhead, always_ready=True))
    issuing, running, more, input_ready, weights_ready : Out(1)
        A real pixel enters the array; a pass runs; passes remain; the next pass's input chunk
        is whole; its weights are in the shadow register (for the performance counters).
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.sum_width = 16 + (cfg.p_ic - 1).bit_length()
        super().__init__({
            "desc": In(Descriptor), "run": In(1), "clear": In(1),
            "weights": In(stream.Signature(cfg.data_width)),
            "ready": In(data.ArrayLayout(8, 2)), "release": Out(2),
            "buf_addr": Out(range(cfg.ibuf_depth)), "buf_data": In(cfg.data_width),
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
        cfg, d = self.cfg, unit_descriptor(m, self.desc)
        k3 = d.kernel3
        # "next" counters name the next pass to start; they advance when it starts.
        c0, c0w, og, ig = Signal(16), Signal(24), Signal(8), Signal(8)
        ky, kx, islot, bslot = Signal(2), Signal(2), Signal(), Signal()
        first = (ig == 0) & (ky == 0) & (kx == 0)
        kmax = Mux(k3, 2, 0)
        lastk = (ky == kmax) & (kx == kmax)
        last_ig = ig == last_index(m, self.desc.in_groups, name="ig_last")
        last_og = og == last_index(m, self.desc.og_passes, name="og_last")
        # The tile's pixel count, four registered steps behind c0w, one carry chain each (the
        # clip and the subtraction in one step were 12.3 ns routed). c0w changes when a pass
        # starts, shows the cycle after, npix four cycles after that: in time for the next
        # start, min_pass >= 5 cycles later (the first pass waits for DDR).
        c1t, c1w, c1c, npix = Signal(25), Signal(25), Signal(24), Signal(24)
        ctrl.d.sync += [c1t.eq(c0w + d.tile_pix),
                        c1w.eq(c1t + Mux(d.pool == Pool.P2S1, d.width, 0)),
                        c1c.eq(min_of(c1w, d.in_plane)), npix.eq(c1c - c0w)]
        c0_next = advanced(m, c0, d.tile_conv_rows)  # c0w's is c1t
        start = Signal()  # the next pass starts
        base, input_ok = self._input(ctrl, d, start, c0, c0w, c1w, islot, ig, lastk, last_ig)
        shadow_valid = Signal()
        # Passes remain, registered (c0w changes only at a start, the next start is >= 4 cycles
        # later); true at a layer start, since every layer has a pixel.
        more = Signal(init=1)
        ctrl.d.sync += more.eq(c0w < d.in_plane)
        m.submodules.mac = mac = MacArray(cfg.p_ic, cfg.p_oc)
        # The shadow holds the next pass's weights once it is valid and no start is still
        # waiting to hand it to the array.
        handing_over = self._weights(m, ctrl, start, shadow_valid, mac)
        m.d.comb += [self.more.eq(more), self.input_ready.eq(input_ok),
                     self.weights_ready.eq(shadow_valid & ~handing_over)]
        # Whether the next pass may start, registered: `start` is then one gate behind the
        # window generator's `end` register, and it fans out to every pass counter. A value a
        # cycle old is safe: each condition falls only through a start of ours (its chunk
        # released, its weights handed over, its bank claimed, its counters advanced), which
        # shows in the condition within three cycles, and the next start comes no sooner than
        # min_pass >= 5 cycles after it.
        can_start = Signal()
        ctrl.d.sync += can_start.eq(self.more & input_ok & shadow_valid & ~handing_over
                                    & (~first | self.bank_free.bit_select(bslot, 1)))
        # the running pass: the window generator walks the pixels; these tag it
        m.submodules.window = wg = ResetInserter(self.clear)(WindowGen(min_pass=cfg.min_pass))
        r_first, r_lastog, r_release, r_islot, r_bslot = (
            Signal(name=f"r_{n}") for n in ("first", "lastog", "release", "islot", "bslot"))
        m.d.comb += start.eq((~wg.running | wg.end) & self.run & can_start)
        m.d.comb += [
            wg.start.eq(start), wg.k3.eq(k3), wg.ky.eq(ky), wg.kx.eq(kx), wg.width.eq(d.width),
            wg.height.eq(d.height), wg.c0.eq(c0), wg.npix.eq(npix), wg.base.eq(base),
            self.issuing.eq(wg.valid), self.running.eq(wg.running),
        ]
        with m.If(wg.end & r_release):
            m.d.comb += self.release.eq(Mux(r_islot, 0b10, 0b01))
        with m.If(start & first):
            m.d.comb += self.bank_claim.eq(Mux(bslot, 0b10, 0b01))
        with ctrl.If(start):
            # the unit ends: streaming, with its one chunk; resident, with the tile's last pass
            ctrl.d.sync += [
                r_first.eq(first), r_lastog.eq(lastk & last_ig),
                r_release.eq(lastk & (~d.resident | (last_ig & last_og))),
                r_islot.eq(islot), r_bslot.eq(bslot), kx.eq(kx + 1),
            ]
            # advance the next-pass counters: kx, ky, ig, og, tile
            with ctrl.If(kx == kmax):
                ctrl.d.sync += [kx.eq(0), ky.eq(ky + 1)]
                with ctrl.If(ky == kmax):
                    ctrl.d.sync += [ky.eq(0), ig.eq(ig + 1), islot.eq(islot ^ ~d.resident)]
                    with ctrl.If(last_ig):
                        ctrl.d.sync += [ig.eq(0), og.eq(og + 1), bslot.eq(~bslot)]
                        with ctrl.If(last_og):
                            ctrl.d.sync += [og.eq(0), c0.eq(c0_next), c0w.eq(c1t),
                                            islot.eq(~islot)]
        self._datapath(m, ctrl, d, wg, mac, r_first, r_lastog, r_bslot)
        return m

    def _input(self, ctrl, d, start, c0, c0w, c1w, islot, ig, lastk, last_ig):
        """The next pass's chunk in the input buffer: its base address and whether it is whole.

        Resident, chunk ``ig`` of a tile starts ``ig`` chunk lengths into the unit's half; the
        length (the tile's input rows × W) follows c0w in four registered steps (c1w's two,
        then ``end`` and ``length``), like the loader's run bounds, and is used at the earliest
        by the next start, with the tile's first pass: c0w changes at a start, the new value
        shows the cycle after, and the length four cycles after that, in time for a start
        ``min_pass`` >= 5 cycles after the one that changed c0w. The base
        and the "chunk whole" compare are registered too: the counters change only at a start,
        and the next start is ``min_pass`` >= 4 cycles later.
        """
        cfg, k3 = self.cfg, d.kernel3
        half = cfg.ibuf_depth // 2
        i0w, end, length = Signal(24), Signal(25), Signal(24)
        ctrl.d.sync += [i0w.eq(Mux(k3 & (c0 != 0), c0w - d.width, c0w)),
                        end.eq(min_of(c1w, d.in_plane) + Mux(k3, d.width, 0)),
                        length.eq(min_of(end, d.in_plane) - i0w)]
        offset = Signal(range(cfg.ibuf_depth))  # the next pass's chunk, from its half's start
        with ctrl.If(start & lastk):
            with ctrl.If(last_ig | ~d.resident):
                ctrl.d.sync += offset.eq(0)
            with ctrl.Else():
                ctrl.d.sync += offset.eq(offset + length)
        base = Signal(range(cfg.ibuf_depth))
        input_ok = Signal()
        ctrl.d.sync += [base.eq(Mux(islot & ~d.single_region, half, 0) + offset),
                        input_ok.eq(self.ready[islot] > Mux(d.resident, ig, 0))]
        return base, input_ok

    def _datapath(self, m, ctrl, d, wg, mac, r_first, r_lastog, r_bslot):
        """Buffer address → read → operands → MAC array → the ``acc`` and ``read`` streams."""
        cfg, p_ic = self.cfg, self.cfg.p_ic
        # A → the buffer read (the buffer registers the address, a copy per byte lane); the
        # pixel's tag travels beside the data from here on, delayed to meet it.
        m.d.comb += self.buf_addr.eq(wg.addr[:len(self.buf_addr)])
        tag = Signal(data.StructLayout({"valid": 1, "first": 1, "last": 1, "bank": 1,
                                        "pad": 1, "pix": range(cfg.acc_depth)}))
        m.d.comb += tag.eq(Cat(wg.valid, r_first, r_lastog & wg.last_pix, r_bslot, wg.pad,
                               wg.pix))
        for k in range(IBUF_READ_LATENCY):
            tag_q = Signal.like(tag, name=f"tag_b{k}")
            ctrl.d.sync += tag_q.eq(tag)
            tag = tag_q
        # X: the operands, registered in front of the multipliers (Ref: TN1267: the slice's
        # input registers follow, so only routing lies between these and the multiplier). (Four
        # copies, each for a quarter of the output channels, made routing worse.)
        x_vec = Signal(data.ArrayLayout(signed(8), p_ic), reset_less=True)
        m.d.sync += x_vec.eq(Mux(tag.pad, Cat(*[d.pad_value] * p_ic), self.buf_data))
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

    def _weights(self, m, ctrl, start, shadow_valid, mac):
        """Shadow register: ``p_oc`` beats of the stream, held until the MAC array takes them
        with the pass's first pixel in its operand copies (``load``: the start delayed by A, the
        :data:`~hdl.engine.loader.IBUF_READ_LATENCY` cycles of the buffer read, X and the
        copies); it refills from that cycle on. Returns "a start is still handing its weights
        over"."""
        p_ic, p_oc = self.cfg.p_ic, self.cfg.p_oc
        w_layout = data.ArrayLayout(data.ArrayLayout(signed(8), p_ic), p_oc)
        shadow = Signal(w_layout, reset_less=True)
        fill = Signal(range(p_oc))
        # the start, delayed by 1, 2, ... cycles: A, the buffer read, X, the MAC array's operand
        # copies (the weights load with the first pixel's operands at the multipliers)
        started = Signal(2 + IBUF_READ_LATENCY + OPERAND_LATENCY)
        ctrl.d.sync += started.eq(Cat(start, started[:-1]))
        load = started[-1]
        # the load drives the clock enables of all p_ic · p_oc multipliers: a copy per channel
        m.submodules.load = load_copies = Replicated(p_oc)
        m.d.comb += [load_copies.i.eq(started[-2]), mac.w.eq(shadow),
                     mac.w_load.eq(load_copies.o), self.weights.ready.eq(~shadow_valid | load)]
        pop = self.weights.valid & self.weights.ready
        # A beat reaches the shadow through a registered copy per pair of channels, which sit
        # side by side in one DSP row (hdl.floorplan): one net from the weight store to the
        # 1,024 shadow bits over three DSP rows was 12-13.5 ns routed. The word lands a cycle
        # after its pop; a load comes at least six cycles after the last pop (the start waits
        # for shadow_valid, then A, the buffer read, X and the operand copies).
        pairs = max(1, p_oc // 2)
        m.submodules.beat = beat = Replicated(pairs, width=data.StructLayout({
            "data": p_ic * 8, "pop": 1, "fill": len(fill)}))
        m.d.comb += [beat.i.data.eq(self.weights.payload), beat.i.pop.eq(pop),
                     beat.i.fill.eq(fill)]
        for o in range(p_oc):
            copy = beat.o[o * pairs // p_oc]
            with m.If(copy.pop & (copy.fill == o)):
                m.d.sync += shadow[o].eq(copy.data)
        with ctrl.If(load):
            ctrl.d.sync += shadow_valid.eq(0)
        with ctrl.If(pop):
            ctrl.d.sync += fill.eq(fill + 1)
            with ctrl.If(fill == p_oc - 1):
                ctrl.d.sync += [fill.eq(0), shadow_valid.eq(1)]
        return started.any()
