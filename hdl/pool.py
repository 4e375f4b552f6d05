"""Maxpool after requantization (docs/fixed-point.md §5): the accumulator-bank walk in output
order, and the running max over a window."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hdl.descriptor import Pool

__all__ = ["PoolMax", "PoolWalker"]


class PoolWalker(wiring.Component):
    """Walks one row tile's accumulator bank in output order, one position per ``step``.

    Order: for each sub-group of ``p_ic`` channels (``n_sub`` of them), each output row of the
    tile (``rows``), each output column, each window position ``j``: the 2×2 window
    (``j = 2·dy + dx``) for a pool, four beats of the same pixel for int32 output, else one
    position. With ``upsample`` (int8, no pool: nearest ×2 on the write) each output row is
    walked twice and each pixel of it twice (``j`` = 0, 1), every position a window of its own
    (``first`` and ``last`` high), so the beats are the rows of the upsampled map in order.

    The window of output ``(py, px)`` starts at conv ``(py·s, px·s)`` (darknet's offset
    ``-(padding // 2)`` is 0 for size 2), stride ``s`` = 2 for 2×2/2, 1 otherwise; ``pos`` is low
    for positions past the bottom or right edge (they must never win). The bank holds conv rows
    from ``c0`` on, ``width`` pixels each: ``addr = (cy - c0)·width + cx``.

    ``start`` rewinds to the first position; ``done`` is ``step`` at the last one. Inputs must be
    stable between ``start`` and ``done``.
    """

    def __init__(self, *, n_sub):
        self.n_sub = n_sub
        super().__init__({
            "start": In(1), "step": In(1), "pool": In(Pool), "out_int32": In(1), "upsample": In(1),
            "width": In(16), "height": In(16), "out_width": In(16), "rows": In(16), "c0": In(16),
            "addr": Out(24), "pos": Out(1), "first": Out(1), "last": Out(1), "j": Out(2),
            "sub": Out(range(n_sub)), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        py, px = Signal(16), Signal(16)  # output row within the tile, output column
        rowbase = Signal(24)  # (py·s)·width
        col = Signal(16)  # px·s
        rep = Signal()  # upsample: the second walk of output row py
        pooled = self.pool != Pool.NONE
        step2 = self.pool == Pool.P2S2
        up = self.upsample
        j_last = Mux(pooled | self.out_int32, 3, Mux(up, 1, 0))
        dy = Mux(pooled, self.j[1], 0)
        dx = Mux(pooled, self.j[0], 0)
        cy = self.c0 + Mux(step2, py << 1, py) + dy
        cx = col + dx
        pix_end = self.j == j_last
        row_end = px == self.out_width - 1
        row_done = row_end & (rep | ~up)
        tile_end = row_done & (py == self.rows - 1)
        m.d.comb += [
            self.addr.eq(rowbase + Mux(dy, self.width, 0) + cx),
            self.pos.eq((cy < self.height) & (cx < self.width)),
            self.first.eq((self.j == 0) | up),
            self.last.eq(pix_end | up),
            self.done.eq(self.step & pix_end & tile_end & (self.sub == self.n_sub - 1)),
        ]
        with m.If(self.start):
            m.d.sync += [self.sub.eq(0), py.eq(0), px.eq(0), self.j.eq(0), rowbase.eq(0),
                         col.eq(0), rep.eq(0)]
        with m.Elif(self.step):
            m.d.sync += self.j.eq(self.j + 1)
            with m.If(pix_end):
                m.d.sync += [self.j.eq(0), px.eq(px + 1), col.eq(col + Mux(step2, 2, 1))]
                with m.If(row_end):
                    m.d.sync += [px.eq(0), col.eq(0)]
                    with m.If(row_done):
                        m.d.sync += [rep.eq(0), py.eq(py + 1),
                                     rowbase.eq(rowbase + Mux(step2, self.width << 1, self.width))]
                    with m.Else():  # upsample: the same output row again, for row 2·py + 1
                        m.d.sync += rep.eq(1)
                    with m.If(tile_end):
                        m.d.sync += [py.eq(0), rowbase.eq(0), self.sub.eq(self.sub + 1)]
        return m


class PoolMax(wiring.Component):
    """Running max of int8 lanes over one window: positions with ``pos`` low contribute -128,
    which never wins since every window holds a real position. ``out`` (combinational) is valid
    with ``out_valid`` on the window's ``last`` position."""

    def __init__(self, lanes):
        layout = data.ArrayLayout(signed(8), lanes)
        self.lanes = lanes
        super().__init__({
            "valid": In(1), "first": In(1), "last": In(1), "pos": In(1), "y": In(layout),
            "out_valid": Out(1), "out": Out(layout),
        })

    def elaborate(self, platform):
        m = Module()
        best = Signal(data.ArrayLayout(signed(8), self.lanes))
        for i in range(self.lanes):
            cand = Mux(self.pos, self.y[i], -128)
            m.d.comb += self.out[i].eq(Mux(self.first, cand,
                                           Mux(cand > best[i], cand, best[i])))
        with m.If(self.valid):
            m.d.sync += best.eq(self.out)
        m.d.comb += self.out_valid.eq(self.valid & self.last)
        return m
