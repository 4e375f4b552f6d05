"""The simulation top: the sequencer with its AXI4 port either on the pins (for the cocotb DDR
model, ``sim.ddr``) or on a burst-level memory bridge whose timing lives in the RTL.

Why a bridge: the Python DDR model acts on every clock while a burst streams, and that dominates
a whole-network cosimulation (65 % of the profile; tiny-YOLOv2-VOC streams 5.7 M read beats). The
bridge keeps the bus protocol and the DDR timing (read latency from the AR handshake, one beat per
cycle, responses in AR order, write response latency from the last W beat, seeded pseudo-random
gaps on all five channels) in compiled code and asks the testbench for memory only once per
burst: the testbench answers a read burst with all its beats in one wide word and takes a write
burst's beats in one wide word. ``docs/sequencer.md`` describes the ports.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import Flow, In, Out

from hdl.axi import AXI4Signature, WishboneSignature
from hdl.descriptor import EngineConfig
from hdl.sequencer import Sequencer

__all__ = ["AxiBurstBridge", "SimTop"]


class AxiBurstBridge(wiring.Component):
    """AXI4 slave whose memory is served a burst at a time by a testbench (INCR bursts only).

    Parameters
    ----------
    cfg : EngineConfig
        Data and address widths, and ``max_burst`` (beats per burst the wide words carry).
    read_slots : int
        Read bursts accepted and not yet delivered (ARREADY drops when all are in use).

    Ports (besides ``axi``, the slave side)
    -----
    read_latency, write_latency : In(16)
        Cycles from the AR handshake to the first R beat, from the last W beat to the B response.
        The testbench must answer a request within ``read_latency - 1`` cycles to keep the timing
        exact (it answers in one).
    arready_threshold, rvalid_threshold, awready_threshold, wready_threshold, bvalid_threshold :
    In(9)
        Per channel, a READY (AR, AW, W) or an available R beat or B response is presented in a
        cycle when a byte of a free-running random number is below the threshold: 256 = always.
        A VALID once presented stays until taken (Ref: AMBA AXI4 spec A3.2.1).
    seed : In(32), reseed : In(1)
        While ``reseed`` is high the random number restarts from ``seed`` (the testbench does it
        at each run, from the run's timing seed, so that a run's gaps depend on its seed only).
    rq_valid, rq_addr, rq_len : Out
        A read burst waits for its data: beat-aligned byte address and AXI length (beats - 1).
    ld_valid, ld_data, ld_resp : In
        The testbench's answer, taken on the clock edge where ``ld_valid`` and ``rq_valid``:
        beat ``i`` in ``ld_data[64 i : 64 i + 64]``, one response for the whole burst.
    wr_valid, wr_addr, wr_len, wr_beats, wr_data, wr_full_strobes : Out
        A complete write burst (address from AW, ``wr_beats`` = W beats - 1, data as above,
        whether every WSTRB was all ones) waits to be committed.
    wc_valid, wc_resp : In
        The testbench committed it (or refused it with ``wc_resp``), taken as ``ld_valid``.
    """

    #: The gated handshakes, in AXI channel order (one random byte each).
    CHANNELS = ("arready", "rvalid", "awready", "wready", "bvalid")

    def __init__(self, cfg=None, *, read_slots=32):
        self.cfg = cfg = cfg or EngineConfig()
        self.read_slots = read_slots
        wide = cfg.max_burst * cfg.data_width
        super().__init__({
            "axi": In(AXI4Signature(addr_width=cfg.addr_width, data_width=cfg.data_width)),
            "read_latency": In(16), "write_latency": In(16),
            **{f"{name}_threshold": In(9, init=256) for name in self.CHANNELS},
            "seed": In(32), "reseed": In(1),
            "rq_valid": Out(1), "rq_addr": Out(cfg.addr_width), "rq_len": Out(8),
            "ld_valid": In(1), "ld_data": In(wide), "ld_resp": In(2),
            "wr_valid": Out(1), "wr_addr": Out(cfg.addr_width), "wr_len": Out(8),
            "wr_beats": Out(8), "wr_data": Out(wide), "wr_full_strobes": Out(1),
            "wc_valid": In(1), "wc_resp": In(2),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, axi = self.cfg, self.axi
        beat_bytes = cfg.data_width // 8
        wide = cfg.max_burst * cfg.data_width
        n = self.read_slots
        ptr_bits = (n - 1).bit_length() + 1  # one extra bit tells full from empty
        cycle = Signal(32)
        m.d.sync += cycle.eq(cycle + 1)

        # Gaps: a 64-bit xorshift generator (Marsaglia 2003, shifts 13, 7, 17), one step per
        # cycle, so that the five channels' bytes are fresh every cycle (an LFSR shifting one bit
        # per cycle would repeat each channel's decision in the next byte a few cycles later).
        rand = Signal(64, init=0x9E37_79B9_7F4A_7C15)
        x = rand ^ (rand << 13)[:64]
        x = x ^ (x >> 7)
        x = x ^ (x << 17)[:64]
        with m.If(self.reseed):
            m.d.sync += rand.eq(Cat(self.seed, Const(0x9E37_79B9, 32)))  # never all zeros
        with m.Else():
            m.d.sync += rand.eq(x)
        ok_ar, ok_r, ok_aw, ok_w, ok_b = (
            rand[8 * i:8 * i + 8] < getattr(self, f"{name}_threshold")
            for i, name in enumerate(self.CHANNELS))
        # A VALID shown and not taken is shown again (R and B may not drop it: A3.2.1).
        r_held, b_held = Signal(), Signal()

        # ---- reads: slots in AR order; the testbench loads them in order; R drains in order --
        def meta(name, width):
            return Array(Signal(width, name=f"{name}{i}") for i in range(n))
        r_addr, r_len, r_id = meta("r_addr", cfg.addr_width), meta("r_len", 8), meta("r_id", 1)
        r_due, r_resp = meta("r_due", 32), meta("r_resp", 2)
        wr_ptr, ld_ptr, rd_ptr = (Signal(ptr_bits, name=f"{p}_ptr") for p in ("ar", "ld", "r"))
        m.submodules.rdata = rdata = memory.Memory(shape=wide, depth=n, init=[])
        ld_port = rdata.write_port()
        rd_port = rdata.read_port(domain="comb")
        slot = ptr_bits - 1
        m.d.comb += axi.arready.eq(((wr_ptr - rd_ptr)[:ptr_bits] < n) & ok_ar)
        with m.If(axi.arvalid & axi.arready):
            # INCR bursts move on aligned beats (Ref: AMBA AXI4 spec A3.4.1).
            m.d.sync += [r_addr[wr_ptr[:slot]].eq(axi.araddr & ~(beat_bytes - 1)),
                         r_len[wr_ptr[:slot]].eq(axi.arlen), r_id[wr_ptr[:slot]].eq(axi.arid),
                         r_due[wr_ptr[:slot]].eq(cycle + self.read_latency),
                         wr_ptr.eq(wr_ptr + 1)]
        m.d.comb += [self.rq_valid.eq(ld_ptr != wr_ptr), self.rq_addr.eq(r_addr[ld_ptr[:slot]]),
                     self.rq_len.eq(r_len[ld_ptr[:slot]]),
                     ld_port.addr.eq(ld_ptr[:slot]), ld_port.data.eq(self.ld_data),
                     ld_port.en.eq(self.ld_valid & self.rq_valid)]
        with m.If(self.ld_valid & self.rq_valid):
            m.d.sync += [r_resp[ld_ptr[:slot]].eq(self.ld_resp), ld_ptr.eq(ld_ptr + 1)]
        beat = Signal(8)
        head = rd_ptr[:slot]
        m.d.comb += [
            rd_port.addr.eq(head),
            axi.rvalid.eq((rd_ptr != ld_ptr) & (r_due[head] <= cycle) & (ok_r | r_held)),
            axi.rdata.eq(rd_port.data.word_select(beat, cfg.data_width)),
            axi.rlast.eq(beat == r_len[head]), axi.rresp.eq(r_resp[head]), axi.rid.eq(r_id[head]),
        ]
        m.d.sync += r_held.eq(axi.rvalid & ~axi.rready)
        with m.If(axi.rvalid & axi.rready):
            m.d.sync += beat.eq(beat + 1)
            with m.If(axi.rlast):
                m.d.sync += [beat.eq(0), rd_ptr.eq(rd_ptr + 1)]

        # ---- writes: a 4-deep AW queue, two W burst buffers, a 4-deep B queue ------------
        aw_addr, aw_len, aw_id = (Array(Signal(w, name=f"aw_{k}{i}") for i in range(4))
                                  for k, w in (("addr", cfg.addr_width), ("len", 8), ("id", 1)))
        aw_in, aw_out = Signal(3), Signal(3)
        m.d.comb += axi.awready.eq(((aw_in - aw_out)[:3] < 4) & ok_aw)
        with m.If(axi.awvalid & axi.awready):
            m.d.sync += [aw_addr[aw_in[:2]].eq(axi.awaddr & ~(beat_bytes - 1)),
                         aw_len[aw_in[:2]].eq(axi.awlen), aw_id[aw_in[:2]].eq(axi.awid),
                         aw_in.eq(aw_in + 1)]
        m.submodules.wdata = wdata = memory.Memory(shape=wide, depth=2, init=[])
        w_port = wdata.write_port(granularity=cfg.data_width)
        wr_port = wdata.read_port(domain="comb")
        w_full, w_strb_ok = Signal(2), Signal(2, init=0b11)
        w_count, w_end = Array(Signal(8, name=f"w_count{i}") for i in range(2)), \
            Array(Signal(32, name=f"w_end{i}") for i in range(2))
        w_in, w_out, w_beat = Signal(), Signal(), Signal(8)
        w_fire = axi.wvalid & axi.wready
        m.d.comb += [axi.wready.eq(~w_full.bit_select(w_in, 1) & ok_w),
                     w_port.addr.eq(w_in), w_port.data.eq(axi.wdata.replicate(cfg.max_burst)),
                     w_port.en.eq(Mux(w_fire, Const(1, cfg.max_burst) << w_beat, 0))]
        with m.If(w_fire):
            m.d.sync += w_beat.eq(w_beat + 1)
            with m.If(axi.wstrb != (1 << beat_bytes) - 1):
                m.d.sync += w_strb_ok.bit_select(w_in, 1).eq(0)
            with m.If(axi.wlast):
                m.d.sync += [w_full.bit_select(w_in, 1).eq(1), w_count[w_in].eq(w_beat),
                             w_end[w_in].eq(cycle), w_in.eq(~w_in), w_beat.eq(0)]
        m.d.comb += [
            self.wr_valid.eq(w_full.bit_select(w_out, 1) & (aw_in != aw_out)),
            self.wr_addr.eq(aw_addr[aw_out[:2]]), self.wr_len.eq(aw_len[aw_out[:2]]),
            self.wr_beats.eq(w_count[w_out]), wr_port.addr.eq(w_out),
            self.wr_data.eq(wr_port.data), self.wr_full_strobes.eq(w_strb_ok.bit_select(w_out, 1)),
        ]
        b_id, b_resp, b_due = (Array(Signal(w, name=f"b_{k}{i}") for i in range(4))
                               for k, w in (("id", 1), ("resp", 2), ("due", 32)))
        b_in, b_out = Signal(3), Signal(3)
        # The AW queue (4) bounds the write bursts in flight, so the B queue (4) never overflows.
        with m.If(self.wc_valid & self.wr_valid):
            m.d.sync += [w_full.bit_select(w_out, 1).eq(0), w_strb_ok.bit_select(w_out, 1).eq(1),
                         w_out.eq(~w_out), aw_out.eq(aw_out + 1),
                         b_id[b_in[:2]].eq(aw_id[aw_out[:2]]), b_resp[b_in[:2]].eq(self.wc_resp),
                         b_due[b_in[:2]].eq(w_end[w_out] + self.write_latency), b_in.eq(b_in + 1)]
        m.d.comb += [axi.bvalid.eq((b_in != b_out) & (b_due[b_out[:2]] <= cycle)
                                   & (ok_b | b_held)),
                     axi.bid.eq(b_id[b_out[:2]]), axi.bresp.eq(b_resp[b_out[:2]])]
        m.d.sync += b_held.eq(axi.bvalid & ~axi.bready)
        with m.If(axi.bvalid & axi.bready):
            m.d.sync += b_out.eq(b_out + 1)
        return m


class SimTop(wiring.Component):
    """:class:`hdl.sequencer.Sequencer` for simulation: ``use_bridge`` = 0 connects its AXI4
    master to the ``axi`` pins (the cocotb DDR model), 1 to the :class:`AxiBurstBridge`, whose
    ports appear as ``mem_<name>``. ``csr``, ``irq`` and ``progress`` are the sequencer's."""

    def __init__(self, cfg=None):
        self.cfg = cfg = cfg or EngineConfig()
        self._bridge = AxiBurstBridge(cfg)
        members = {
            "csr": In(WishboneSignature(addr_width=8, data_width=32)),
            "axi": Out(AXI4Signature(addr_width=cfg.addr_width, data_width=cfg.data_width)),
            "irq": Out(1), "progress": Out(16), "use_bridge": In(1),
        }
        for name, member in self._bridge.signature.members.items():
            if name != "axi":
                members[f"mem_{name}"] = member
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.sequencer = seq = Sequencer(self.cfg)
        m.submodules.bridge = bridge = self._bridge
        wiring.connect(m, wiring.flipped(self.csr), seq.csr)
        m.d.comb += [self.irq.eq(seq.irq), self.progress.eq(seq.progress)]
        for name, member in bridge.signature.members.items():
            if name == "axi":
                continue
            port, inner = getattr(self, f"mem_{name}"), getattr(bridge, name)
            m.d.comb += inner.eq(port) if member.flow == Flow.In else port.eq(inner)
        use = self.use_bridge
        for name, member in self.axi.signature.members.items():
            master, pins, slave = getattr(seq.axi, name), getattr(self.axi, name), \
                getattr(bridge.axi, name)
            if member.flow == Flow.Out:  # master to slave: to both, VALIDs only to the one used
                valid = name.endswith("valid")
                m.d.comb += [pins.eq(master & ~use if valid else master),
                             slave.eq(master & use if valid else master)]
            else:
                m.d.comb += master.eq(Mux(use, slave, pins))
        return m
