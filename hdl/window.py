"""The window generator: one pass of the MAC array over a row tile, for one kernel tap."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["WindowGen"]


class WindowGen(wiring.Component):
    """Walks the pixels of a row tile for one kernel tap ``(ky, kx)``, one pixel per cycle.

    The input buffer holds the tile's input rows, row-major, ``width`` pixels per row, starting at
    conv row ``c0 - 1`` for a 3×3 kernel (``c0`` for a 1×1 kernel or when ``c0 == 0``: the row
    above the map is padding, not stored). For the pixel at conv position ``(y, x)`` the tap
    reads input ``(y + ky - 1, x + kx - 1)`` (3×3) or ``(y, x)`` (1×1); ``addr`` is its
    input-buffer address and ``pad`` says it lies outside the map (the engine substitutes the
    pad value). This is ``model.golden.im2col``'s row ``ky * 3 + kx``, one column per cycle.

    The tile's rows start at buffer address ``base`` (0 unless the buffer holds several runs).
    ``start`` latches ``ky``, ``kx``, ``c0``, ``base`` and ``npix`` (the tile's pixels) and begins
    the pass the next cycle; it may coincide with ``end`` of the previous pass (no bubble). The
    pass lasts ``max(npix, min_pass)`` cycles: ``valid`` is low on the padding cycles. ``k3``,
    ``width`` and ``height`` must be stable for the whole layer, from one cycle before the first
    ``start``; ``ky``, ``kx``, ``c0`` and ``base`` from two cycles before each ``start`` (the
    pass's first address is computed from them over two cycles ahead, so that ``start`` only
    loads it).

    ``valid``, ``last_pix`` and ``end`` are registers, each set a cycle ahead from a compare with a
    value registered at the start (``start`` of the next pass, in the compute unit, is one gate
    behind ``end``).

    Parameters
    ----------
    min_pass : int
        Shortest pass (the accumulator read-modify-write distance), at least 2.
    """

    def __init__(self, *, min_pass, pix_width=24, addr_width=26):
        if min_pass < 2:
            raise ValueError(f"min_pass must be at least 2, not {min_pass}")
        self.min_pass = min_pass
        super().__init__({
            "start": In(1), "k3": In(1), "ky": In(2), "kx": In(2), "width": In(16),
            "height": In(16), "c0": In(16), "npix": In(pix_width),
            "base": In(addr_width - 1),
            "running": Out(1), "valid": Out(1), "pix": Out(pix_width),
            "addr": Out(signed(addr_width)), "pad": Out(1), "last_pix": Out(1), "end": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        w, h, k3 = self.width, self.height, self.k3
        # The indices one before the pass's last pixel and its last real pixel, registered at
        # the start: `end` and `last_pix` are set when `pix` reaches them, for the next cycle.
        # (`npix - 2` wraps for a one-pixel pass, which `pix` never reaches: `last_pix` is then
        # set by the start itself.)
        end, last_pix, valid = Signal(), Signal(), Signal()
        before_last = Signal.like(self.npix)
        before_last_pix = Signal.like(self.npix)
        ky, kx = Signal(2), Signal(2)
        x = Signal(16)
        cr = Signal(16)  # conv row of the current pixel
        rowaddr = Signal(signed(len(self.addr)))  # buffer address of tap (ky, kx) at x = 0
        # Per-layer constants, registered (width and height are stable for the layer): -W and
        # the last column and row, so the start and the row wrap need one adder each.
        w_neg = Signal(signed(17))
        w_last, h_last, w_before_last = Signal(16), Signal(16), Signal(16)
        m.d.sync += [w_neg.eq(-w), w_last.eq(w - 1), h_last.eq(h - 1), w_before_last.eq(w - 2)]
        # `x == w_last`, set a cycle ahead, so the row wrap (x, cr and rowaddr) waits on a
        # register instead of a 16-bit compare (rowaddr's add after the compare was a routed
        # worst path). `w - 2` wraps for a one-pixel row, which the start sets it for.
        row_end = Signal()
        # Buffer row of conv row c0's tap ky: row c0 - 1 is stored first unless c0 == 0 (3x3),
        # so the tap's row is (c0 != 0) + ky - 1, in -1 ... 2; its column offset is kx - 1.
        row, col = Signal(signed(3)), Signal(signed(3))  # two's complement by truncation
        m.d.comb += [row.eq(Mux(k3, (self.c0 != 0) + self.ky, 1) - 1),
                     col.eq(Mux(k3, self.kx, 1) - 1)]
        row_base = Mux(row == -1, w_neg, Mux(row == 1, w, Mux(row == 2, w << 1, 0)))
        # the next pass's first address, from inputs stable since two cycles before its start:
        # the tap's offset, then the base added (one carry chain per cycle)
        tap_offset, first_addr = Signal.like(rowaddr), Signal.like(rowaddr)
        m.d.sync += [tap_offset.eq(row_base + col), first_addr.eq(tap_offset + self.base)]
        m.d.comb += [
            self.end.eq(end), self.valid.eq(valid), self.last_pix.eq(last_pix),
            self.addr.eq(rowaddr + x),
            self.pad.eq(~(Mux(k3, ((ky != 0) | (cr != 0)) & ((ky != 2) | (cr != h_last)), 1)
                          & Mux(k3, ((kx != 0) | (x != 0)) & ((kx != 2) | (x != w_last)), 1))),
        ]
        with m.If(self.start):
            m.d.sync += [
                self.running.eq(1), valid.eq(1), last_pix.eq(self.npix == 1), end.eq(0),
                before_last.eq(Mux(self.npix < self.min_pass, self.min_pass, self.npix) - 2),
                before_last_pix.eq(self.npix - 2),
                ky.eq(self.ky), kx.eq(self.kx), self.pix.eq(0), x.eq(0), cr.eq(self.c0),
                rowaddr.eq(first_addr), row_end.eq(w_last == 0),
            ]
        with m.Elif(self.running):
            m.d.sync += [self.pix.eq(self.pix + 1), x.eq(x + 1),
                         valid.eq(valid & ~last_pix), last_pix.eq(self.pix == before_last_pix),
                         end.eq(self.pix == before_last),
                         row_end.eq(x == w_before_last)]
            with m.If(row_end):
                m.d.sync += [x.eq(0), cr.eq(cr + 1), rowaddr.eq(rowaddr + w),
                             row_end.eq(w_last == 0)]
            with m.If(end):
                m.d.sync += [self.running.eq(0), valid.eq(0), last_pix.eq(0), end.eq(0)]
        return m
