"""Board tops: clocks, LiteDRAM, bus glue and the bitstream build (docs/board.md)."""
