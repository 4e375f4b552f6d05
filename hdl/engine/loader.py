"""The input loader: feature-map rows from DDR into the two-slot input buffer."""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.axi import ReadRequestSignature, burst_beats, last_burst
from hdl.descriptor import Descriptor, Pool

__all__ = ["InputLoader", "ReadBeat", "min_of"]


def min_of(a, b):
    """The smaller of two unsigned values, as an Amaranth expression."""
    return Mux(a < b, a, b)


class ReadBeat(data.StructLayout):
    """One AXI R beat routed to a client: ``data`` and ``last`` (RLAST)."""

    def __init__(self, data_width):
        super().__init__({"data": data_width, "last": 1})


class InputLoader(wiring.Component):
    """Per (tile, output-channel group, input-channel group), the tile's input rows of that channel
    group (one contiguous run of the ``[C/8][H][W][8]`` layout) into one of two buffer slots.

    The rows are conv rows ``[c0, c1)`` of the tile (``c1`` includes the 2×2/1 overlap row and
    is clipped to the map), widened by the 3×3 halo: from ``c0 - 1`` (unless ``c0 = 0``) to
    ``c1 + 1`` (clipped). Slot ``s`` is claimed when free, filled by bursts of at most
    ``max_burst`` beats that never cross 4 KB (Ref: AMBA AXI4 spec A3.4.1), marked ``full`` when
    its last beat arrived, and freed by ``release``. The run's bounds are registered over three
    states and each burst's length in a fourth, so no state chains more than two carry chains.

    Full/free flags rather than a stream towards the compute unit: the compute unit reads a slot
    many times (once per kernel tap) in its own order, so what it needs is "this slot holds the
    whole run", not a sequence of beats.

    Parameters
    ----------
    cfg : EngineConfig

    Attributes
    ----------
    desc : In(Descriptor)
        The layer; stable while ``run``.
    run : In(1)
        Requests are issued only while high.
    req : Out(ReadRequestSignature)
        Burst requests to the AR arbiter.
    r : In(stream.Signature(ReadBeat, always_ready=True))
        The read data of this client's bursts, in request order.
    release : In(2)
        Bit ``s``: the compute unit is done with slot ``s``.
    full : Out(2)
        Bit ``s``: slot ``s`` holds its whole run.
    rd_addr : In(range(2 * ibuf_depth))
        Buffer read address: slot in the top bit, pixel below.
    rd_data : Out(data_width)
        The word at ``rd_addr`` of the previous cycle.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        super().__init__({
            "desc": In(Descriptor), "run": In(1),
            "req": Out(ReadRequestSignature(cfg.addr_width)),
            "r": In(stream.Signature(ReadBeat(cfg.data_width), always_ready=True)),
            "release": In(2), "full": Out(2),
            "rd_addr": In(range(2 * cfg.ibuf_depth)), "rd_data": Out(cfg.data_width),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, d = self.cfg, self.desc
        beat_bytes = cfg.data_width // 8
        k3 = d.kernel3
        m.submodules.buf = buf = memory.Memory(shape=cfg.data_width, depth=2 * cfg.ibuf_depth,
                                               init=[])
        wr, rd = buf.write_port(), buf.read_port()
        m.d.comb += [rd.addr.eq(self.rd_addr), self.rd_data.eq(rd.data)]
        busy = Signal(2)  # claimed or filled; cleared by release
        claim = Signal(2)
        fill = Signal(2)
        m.d.sync += [busy.eq((busy | claim) & ~self.release),
                     self.full.eq((self.full | fill) & ~self.release)]
        # one tag per burst in flight: is it the last of its slot's run?
        # Burst tags, written at the AR handshake and read with the burst's beats. Unbuffered: a
        # slave may return the first beat in the cycle after AR (latency 1), and SyncFIFOBuffered
        # shows an entry one cycle later than that (the beat would take a stale tag).
        m.submodules.tags = tags = fifo.SyncFIFO(width=1, depth=16)

        c0w = Signal(24)  # tile's first conv row × W
        c0 = Signal(16)
        og = Signal(8)
        ig = Signal(8)
        igbase = Signal(32)  # ig × in_plane
        slot = Signal()
        addr = Signal(cfg.addr_width)
        rem = Signal(24)
        i0w = Signal(24)  # first input row × W (the halo row above the tile, if any)
        end = Signal(25)  # conv end, then input end, before clipping to the plane
        blen = Signal(range(cfg.max_burst + 1))
        last = Signal()
        with m.FSM():
            with m.State("SLOT"):
                with m.If(self.run & (c0w < d.in_plane) & ~busy.bit_select(slot, 1)):
                    m.d.comb += claim.eq(Mux(slot, 0b10, 0b01))
                    m.d.sync += [i0w.eq(Mux(k3 & (c0 != 0), c0w - d.width, c0w)),
                                 end.eq(c0w + d.tile_pix + Mux(d.pool == Pool.P2S1, d.width, 0))]
                    m.next = "SPAN1"
            with m.State("SPAN1"):
                m.d.sync += [end.eq(min_of(end, d.in_plane) + Mux(k3, d.width, 0)),
                             addr.eq(d.in_addr + (igbase + i0w) * beat_bytes)]
                m.next = "SPAN2"
            with m.State("SPAN2"):
                m.d.sync += rem.eq(min_of(end, d.in_plane) - i0w)
                m.next = "CALC"
            with m.State("CALC"):
                m.d.sync += [blen.eq(burst_beats(addr, rem, cfg.max_burst, beat_bytes)),
                             last.eq(last_burst(addr, rem, cfg.max_burst, beat_bytes))]
                m.next = "BURST"
            with m.State("BURST"):
                m.d.comb += [
                    self.req.valid.eq(self.run & tags.w_rdy), self.req.addr.eq(addr),
                    self.req.len.eq(blen - 1), tags.w_en.eq(self.req.ready), tags.w_data.eq(last),
                ]
                with m.If(self.req.ready):
                    m.d.sync += [addr.eq(addr + blen * beat_bytes), rem.eq(rem - blen)]
                    m.next = "CALC"
                    with m.If(last):
                        m.d.sync += [slot.eq(~slot), igbase.eq(igbase + d.in_plane),
                                     ig.eq(ig + 1)]
                        with m.If(ig == d.in_groups - 1):
                            m.d.sync += [ig.eq(0), igbase.eq(0), og.eq(og + 1)]
                            with m.If(og == d.og_passes - 1):
                                m.d.sync += [og.eq(0), c0.eq(c0 + d.tile_conv_rows),
                                             c0w.eq(c0w + d.tile_pix)]
                        m.next = "SLOT"
        # Receive side: data lands at the running pointer of the slot being filled.
        r_slot = Signal()
        r_ptr = Signal(range(cfg.ibuf_depth))
        m.d.comb += [wr.addr.eq(Cat(r_ptr, r_slot)), wr.data.eq(self.r.p.data),
                     wr.en.eq(self.r.valid), tags.r_en.eq(self.r.valid & self.r.p.last)]
        with m.If(self.r.valid):
            m.d.sync += r_ptr.eq(r_ptr + 1)
            with m.If(self.r.p.last & tags.r_data[0]):
                m.d.sync += [r_slot.eq(~r_slot), r_ptr.eq(0)]
                m.d.comb += fill.eq(Mux(r_slot, 0b10, 0b01))
        return m
