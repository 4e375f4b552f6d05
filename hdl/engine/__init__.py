"""The convolution engine: one layer from a descriptor, DDR in, DDR out (``docs/engine.md``).

One Component per unit, wired in :mod:`hdl.engine.core`:

- :mod:`~hdl.engine.loader`: :class:`~hdl.engine.loader.InputLoader` (input rows → buffer slots)
- :mod:`~hdl.engine.weights`: :class:`~hdl.engine.weights.WeightLoader` (requant tables, weights)
- :mod:`~hdl.engine.mac`: :class:`~hdl.engine.mac.MacArray` (P_oc × P_ic multiply-add)
- :mod:`~hdl.engine.drain`: :class:`~hdl.engine.drain.Drain` (requantize, pool)
- :mod:`~hdl.engine.writer`: :class:`~hdl.engine.writer.Writer` (AXI write bursts)
- :mod:`~hdl.engine.core`: :class:`EngineCore` (pass sequencing, accumulator banks, counters) and
  :class:`Engine` (the core behind its CSRs)
"""

from hdl.engine.core import COUNTERS, CSR, ERR, Engine, EngineCore

__all__ = ["COUNTERS", "CSR", "ERR", "Engine", "EngineCore"]
