"""Latency model of LiteRT runtimes, for pruning to milliseconds instead of FLOPs.

- `runtimes`: the runtime targets (`litert-float32-1t`, ...), parsed from a flag value.
- `cache`: measured tables as JSON, keyed by block signature + runtime + LiteRT version + CPU.
- `blocks`: a model cut into timed blocks (a layer with the BatchNorm/activations LiteRT fuses
  into it) and single-block Keras models at chosen channel counts.
- `timing`: convert a block and time it in ai_edge_litert.
- `model`: `LatencyModel(runtime)`: the runtime's channel tile (`round_to=auto`), per-block
  tables, and `GraphCost`, the whole-model prediction the planner's `latency` target takes.

One way only: `tfprune.core` never imports this package; the planner takes a cost object.
"""
from tfprune.latency.runtimes import DEFAULT, RUNTIMES, LatencyError, parse_runtime  # noqa: F401
