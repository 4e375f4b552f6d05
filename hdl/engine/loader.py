"""The input loader: feature-map rows from DDR into the input buffer, in chunks and units."""

from amaranth import Array, Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.axi import BurstPlanner, ReadRequestSignature
from hdl.bram import BRAM_READ_LATENCY, BlockRAM
from hdl.descriptor import Descriptor, Pool, last_index, unit_descriptor
from hdl.fanout import Replicated

__all__ = ["IBUF_MAX_BANK", "IBUF_READ_LATENCY", "InputBuffer", "InputLoader", "ReadBeat",
           "advanced", "buffer_banks", "min_of"]

#: Cycles from ``rd_addr`` to ``rd_data`` of the input buffer: the address registered (a copy
#: per byte lane), the banks' read (:class:`hdl.bram.BlockRAM`), the registered mux over them.
IBUF_READ_LATENCY = 1 + BRAM_READ_LATENCY + 1

#: The largest input-buffer bank: one DP16KD per bit of the word, in its 16K × 1 configuration.
IBUF_MAX_BANK = 16384


def min_of(a, b):
    """The smaller of two unsigned values, as an Amaranth expression."""
    return Mux(a < b, a, b)


def advanced(m, counter, step):
    """``counter + step`` in a register, updated every cycle: the counter's advance by a
    descriptor field is then a register move (the add from a descriptor copy into the
    counter's clock-enabled register was 9.6–10.2 ns routed). Valid for a counter that never
    advances in two consecutive cycles: the sum is a cycle behind it. Call it outside any
    ``If`` or FSM state, so that the sum is updated in every cycle."""
    ahead = Signal.like(counter, name=f"{counter.name}_next")
    m.d.sync += ahead.eq(counter + step)
    return ahead


class ReadBeat(data.StructLayout):
    """One AXI R beat routed to a client: ``data`` and ``last`` (RLAST)."""

    def __init__(self, data_width):
        super().__init__({"data": data_width, "last": 1})


def buffer_banks(depth):
    """The banks of a ``depth``-word input buffer: ``[(base, words), ...]``, powers of two
    largest first (so each base is a multiple of its bank's size), none above
    :data:`IBUF_MAX_BANK`. 22 528 words (the default) are 16 384 + 4 096 + 2 048."""
    banks, base = [], 0
    for bit in reversed(range(depth.bit_length())):
        if depth >> bit & 1:
            for _ in range(max(1, (1 << bit) // IBUF_MAX_BANK)):
                size = min(1 << bit, IBUF_MAX_BANK)
                banks.append((base, size))
                base += size
    return banks


class InputBuffer(wiring.Component):
    """``depth`` words of ``width`` bits in power-of-two banks (:func:`buffer_banks`), one write
    and one read port, each byte lane of the word a memory of its own in every bank.

    A bank of 2^k words maps onto DP16KD in their 2^k × (18 / 2^(k - 10)) configuration, one
    block RAM per 1, 2, 4 or 8 bits of the word (16K × 1 up to 2K × 9): no bank needs a mux of
    its own, and the buffer's read mux has as few inputs as the depth has binary digits (three
    for the default, against eleven for banks of 2048 words: 704 wires from block RAMs spread
    over the chip into one mux was the routed worst path).

    A read takes :data:`IBUF_READ_LATENCY` cycles: ``rd_addr`` is registered in one copy per
    byte lane (:class:`hdl.fanout.Replicated`), each copy reads its lane's memories in every
    bank (:class:`hdl.bram.BlockRAM`: the block RAM and its output register) and selects its
    lane's byte of the addressed bank into a register. A lane is 11 block RAMs at the default
    (8 + 2 + 1) and its own copy of the address and select: one address register driving all 88
    block RAMs was the routed worst path (16.7 ns, all routing). Addresses at or beyond
    ``depth`` read an unspecified word and write nothing.

    A write lands in the bank two cycles after ``wr_en`` (it is registered there twice). A word
    read in the cycle it is written is unspecified (:class:`hdl.bram.BlockRAM`): the compute
    unit reads a chunk only once the loader counts it whole (which takes it at least four
    cycles after the last word's ``wr_en``), and the loader writes a half only once the compute
    unit has released it, so a used read never meets a write.

    Attributes
    ----------
    wr_addr, wr_data, wr_en : In
    rd_addr : In(range(depth))
    rd_data : Out(width)
        The word at ``rd_addr`` of :data:`IBUF_READ_LATENCY` cycles before.
    """

    def __init__(self, width, depth):
        self.width, self.depth = width, depth
        super().__init__({
            "wr_addr": In(range(depth)), "wr_data": In(width), "wr_en": In(1),
            "rd_addr": In(range(depth)), "rd_data": Out(width),
        })

    def elaborate(self, platform):
        m = Module()
        banks = buffer_banks(self.depth)
        lanes = self.width // 8
        m.submodules.rd_addr = addr = Replicated(lanes, width=len(self.rd_addr))
        m.d.comb += addr.i.eq(self.rd_addr)
        # The write, registered with each bank's enable decoded, then once more in a copy per
        # byte lane beside the lane's block RAMs (hdl.floorplan keeps a lane's memories in one
        # run): one address register driving all 88 block RAMs was 16.5 ns of routing.
        lows = [(size - 1).bit_length() for _, size in banks]  # a bank's word-address bits
        w_addr, w_data = Signal.like(self.wr_addr), Signal.like(self.wr_data)
        w_en = Signal(len(banks))
        m.d.sync += [w_addr.eq(self.wr_addr), w_data.eq(self.wr_data),
                     w_en.eq(Cat(self.wr_en & (self.wr_addr[low:] == base >> low)
                                 for (base, _), low in zip(banks, lows, strict=True)))]
        m.submodules.wr_addr = lane_write = Replicated(lanes, width=data.StructLayout({
            "addr": len(w_addr), "en": len(w_en)}))
        lane_data = Signal.like(w_data, name="lane_wr_data", reset_less=True)
        m.d.comb += [lane_write.i.addr.eq(w_addr), lane_write.i.en.eq(w_en)]
        m.d.sync += lane_data.eq(w_data)
        for lane in range(lanes):
            byte = slice(8 * lane, 8 * lane + 8)
            lane_addr = addr.o[lane]
            lane_w_addr, lane_w_en = lane_write.o[lane].addr, lane_write.o[lane].en
            words, index = [], 0  # the lane's byte in each bank; the addressed bank
            for i, ((base, size), low) in enumerate(zip(banks, lows, strict=True)):
                m.submodules[f"bank{i}_lane{lane}"] = mem = BlockRAM(8, size)
                m.d.comb += [mem.wr_addr.eq(lane_w_addr[:low]), mem.wr_data.eq(lane_data[byte]),
                             mem.wr_en.eq(lane_w_en[i]), mem.rd_addr.eq(lane_addr[:low])]
                words.append(mem.rd_data)
                index = Mux(lane_addr[low:] == base >> low, i, index)
            # the select follows the block RAMs' read, BRAM_READ_LATENCY cycles
            for _ in range(BRAM_READ_LATENCY):
                index_q = Signal(range(len(banks)), name=f"sel{lane}")
                m.d.sync += index_q.eq(index)
                index = index_q
            m.d.sync += self.rd_data[byte].eq(Array(words)[index])
        return m


class InputLoader(wiring.Component):
    """Loads the input map's rows, one *chunk* (one input-channel group of one row tile, a
    contiguous run of the ``[C/8][H][W][8]`` layout) at a time, into the input buffer.

    A chunk holds conv rows ``[c0, c1)`` of its tile (``c1`` includes the 2×2/1 overlap row and
    is clipped to the map), widened by the 3×3 halo: from ``c0 - 1`` (unless ``c0 = 0``) to
    ``c1 + 1`` (clipped). Chunks come in *units* that occupy one half of the buffer (half ``u %
    2`` for unit ``u``; with ``single_region`` both halves name the whole buffer) until the
    compute unit releases them:

    - resident (``desc.resident``): a unit is a tile, its chunks (input groups 0, 1, ...) back
      to back from the half's start; each is loaded once and read for every output group;
    - streaming: a unit is one chunk, loaded once per (tile, output group, input group).

    A unit's half is claimed when free (``single_region``: when both are), its chunks are filled
    by bursts of at most ``max_burst`` beats that never cross 4 KB (Ref: AMBA AXI4 spec A3.4.1),
    ``ready[h]`` counts the chunks of half ``h`` whose last beat arrived, and ``release`` frees
    the half (and clears its count). The run's bounds are registered over five states, so no
    state holds more than one carry chain and a compare, and each burst's length is planned
    over two more (:class:`hdl.axi.BurstPlanner`).

    Counts and flags rather than a stream towards the compute unit: the compute unit reads a
    chunk many times (once per kernel tap and output group) in its own order, so what it needs
    is "this chunk is whole", not a sequence of beats.

    Parameters
    ----------
    cfg : EngineConfig

    Attributes
    ----------
    desc : In(Descriptor)
        The layer; stable from :data:`~hdl.descriptor.DESC_LATENCY` cycles before ``run`` rises
        until the layer ends (:func:`hdl.descriptor.last_index`).
    run : In(1)
        Requests are issued only while high.
    req : Out(ReadRequestSignature)
        Burst requests to the AR arbiter.
    r : In(stream.Signature(ReadBeat, always_ready=True))
        The read data of this client's bursts, in request order.
    release : In(2)
        Bit ``h``: the compute unit is done with the unit in half ``h``.
    ready : Out(ArrayLayout(8, 2))
        Chunks of the unit in half ``h`` that are whole.
    rd_addr : In(range(ibuf_depth))
        Buffer read address.
    rd_data : Out(data_width)
        The word at ``rd_addr`` of :data:`IBUF_READ_LATENCY` cycles before.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        super().__init__({
            "desc": In(Descriptor), "run": In(1),
            "req": Out(ReadRequestSignature(cfg.addr_width)),
            "r": In(stream.Signature(ReadBeat(cfg.data_width), always_ready=True)),
            "release": In(2), "ready": Out(data.ArrayLayout(8, 2)),
            "rd_addr": In(range(cfg.ibuf_depth)), "rd_data": Out(cfg.data_width),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, d = self.cfg, unit_descriptor(m, self.desc)
        beat_bytes = cfg.data_width // 8
        k3 = d.kernel3
        m.submodules.buf = buf = InputBuffer(cfg.data_width, cfg.ibuf_depth)
        m.d.comb += [buf.rd_addr.eq(self.rd_addr), self.rd_data.eq(buf.rd_data)]
        busy = Signal(2)  # claimed or filled; cleared by release
        claim = Signal(2)
        m.d.sync += busy.eq((busy | claim) & ~self.release)
        # Burst tags, written at the AR handshake and read with the burst's beats: the last burst
        # of a chunk, and of a unit. Unbuffered: a slave may return the first beat in the cycle
        # after AR (latency 1), and SyncFIFOBuffered shows an entry one cycle later than that
        # (the beat would take a stale tag).
        m.submodules.tags = tags = fifo.SyncFIFO(width=2, depth=16)

        c0w = Signal(24)  # tile's first conv row × W
        c0 = Signal(16)
        og = Signal(8)
        ig = Signal(8)
        igbase = Signal(32)  # ig × in_plane
        slot = Signal()  # the half of the current unit
        addr = Signal(cfg.addr_width)
        rem = Signal(24)
        i0w = Signal(24)  # first input row × W (the halo row above the tile, if any)
        end = Signal(25)  # conv end, then input end, before clipping to the plane
        offset = Signal(32)  # the chunk's first beat from the input map's start
        nexts = (advanced(m, igbase, d.in_plane), advanced(m, c0, d.tile_conv_rows),
                 advanced(m, c0w, d.tile_pix))
        m.submodules.plan = plan = BurstPlanner(addr_width=cfg.addr_width, remaining_width=24,
                                                max_beats=cfg.max_burst, beat_bytes=beat_bytes)
        m.d.comb += [plan.addr.eq(addr), plan.remaining.eq(rem)]
        blen, last = plan.beats, plan.last
        last_ig = ig == last_index(m, self.desc.in_groups, name="ig_last")
        last_og = og == last_index(m, self.desc.og_passes, name="og_last")
        unit_end = Signal()  # this chunk ends its unit
        opens = ~d.resident | (ig == 0)  # this chunk opens a unit: it claims the half
        free = Mux(d.single_region, busy == 0, ~busy.bit_select(slot, 1))
        # "Tiles left", registered: compared against the descriptor ahead of the clock enables
        # of the run's bounds, it was 11.8 ns routed. c0w changes only in _advance, which goes
        # through NEXT (a cycle for it to follow) to SLOT.
        more = Signal()
        m.d.sync += more.eq(c0w < d.in_plane)
        with m.FSM():
            with m.State("SLOT"):
                with m.If(self.run & more & (~opens | free)):
                    with m.If(opens):
                        m.d.comb += claim.eq(Mux(slot, 0b10, 0b01))
                    m.d.sync += [i0w.eq(c0w), end.eq(c0w + d.tile_pix),
                                 unit_end.eq(~d.resident | last_ig)]
                    m.next = "SPAN0"
            with m.State("NEXT"):  # `more` sees the new c0w
                m.next = "SLOT"
            with m.State("SPAN0"):
                m.d.sync += [i0w.eq(Mux(k3 & (c0 != 0), i0w - d.width, i0w)),
                             end.eq(end + Mux(d.pool == Pool.P2S1, d.width, 0))]
                m.next = "SPAN1"
            with m.State("SPAN1"):  # the conv end clipped to the plane; the chunk's offset
                m.d.sync += [end.eq(min_of(end, d.in_plane)), offset.eq(igbase + i0w)]
                m.next = "SPAN1B"
            with m.State("SPAN1B"):  # the halo row below; the chunk's address
                m.d.sync += [end.eq(end + Mux(k3, d.width, 0)),
                             addr.eq(d.in_addr + offset * beat_bytes)]
                m.next = "SPAN2"
            with m.State("SPAN2"):
                m.d.sync += rem.eq(min_of(end, d.in_plane) - i0w)
                m.next = "PLAN1"
            with m.State("PLAN1"):  # the planner's two stages see addr and rem
                m.next = "PLAN2"
            with m.State("PLAN2"):
                m.next = "BURST"
            with m.State("BURST"):
                m.d.comb += [
                    self.req.valid.eq(self.run & tags.w_rdy), self.req.addr.eq(addr),
                    self.req.len.eq(blen - 1), tags.w_en.eq(self.req.ready),
                    tags.w_data.eq(Cat(last, last & unit_end)),
                ]
                with m.If(self.req.ready):
                    m.d.sync += [addr.eq(addr + blen * beat_bytes), rem.eq(rem - blen)]
                    m.next = "PLAN1"
                    with m.If(last):
                        self._advance(m, d, og, ig, (igbase, c0, c0w), nexts, slot, unit_end,
                                      last_ig, last_og)
                        m.next = "NEXT"
        self._receive(m, d, buf, tags)
        return m

    @staticmethod
    def _advance(m, d, og, ig, counters, nexts, slot, unit_end, last_ig, last_og):
        """The next chunk: input group, then output group (streaming only), then tile.
        ``counters`` are igbase, c0 and c0w, ``nexts`` their :func:`advanced` sums."""
        (igbase, c0, c0w), (igbase_next, c0_next, c0w_next) = counters, nexts
        m.d.sync += [igbase.eq(igbase_next), ig.eq(ig + 1)]
        with m.If(unit_end):
            m.d.sync += slot.eq(~slot)
        with m.If(last_ig):
            m.d.sync += [ig.eq(0), igbase.eq(0), og.eq(og + 1)]
            with m.If(d.resident | last_og):
                m.d.sync += [og.eq(0), c0.eq(c0_next), c0w.eq(c0w_next)]

    def _receive(self, m, d, buf, tags):
        """Receive side: data lands at the running pointer; a unit's chunks follow each other
        from its half's start."""
        half = self.cfg.ibuf_depth // 2
        r_slot = Signal()
        r_ptr = Signal(range(self.cfg.ibuf_depth))
        counts = [Signal(8, name=f"ready{h}") for h in range(2)]
        m.d.comb += [buf.wr_addr.eq(r_ptr), buf.wr_data.eq(self.r.p.data),
                     buf.wr_en.eq(self.r.valid), tags.r_en.eq(self.r.valid & self.r.p.last),
                     self.ready.eq(Cat(*counts))]
        chunk_end = self.r.valid & self.r.p.last & tags.r_data[0]
        with m.If(self.r.valid):
            m.d.sync += r_ptr.eq(r_ptr + 1)
            with m.If(self.r.p.last & tags.r_data[1]):  # the next unit, in the other half
                m.d.sync += [r_slot.eq(~r_slot),
                             r_ptr.eq(Mux(d.single_region | r_slot, 0, half))]
        for h, count in enumerate(counts):
            with m.If(self.release[h]):
                m.d.sync += count.eq(0)
            with m.Elif(chunk_end & (r_slot == h)):
                m.d.sync += count.eq(count + 1)
