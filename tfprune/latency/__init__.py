"""Latency model of LiteRT runtimes, for pruning to milliseconds instead of FLOPs.

- `runtimes`: the runtime targets (`litert-float32-1t`, ...), parsed from a flag value.
- `cache`: measured tables as JSON, keyed by block signature + runtime + LiteRT version + CPU.
- `blocks`: a model cut into timed blocks (a layer with the BatchNorm/activations LiteRT fuses
  into it) and single-block Keras models at chosen channel counts.
- `timing`: convert a block and time it in ai_edge_litert.
- `tile`: the channel tile read from a probe's timings (a staircase fit).
- `model`: `LatencyModel(runtime)`: the runtime's channel tile (`round_to=auto`), per-block
  tables, and `GraphCost`, the whole-model prediction the planner's `latency` target takes.
- `feedback`: the planned model measured side by side with the unpruned one, and re-planned
  on a calibration through that measurement until the measured cut is the level.

One way only: `tfprune.core` and `tfprune.pruner` never import this package; the planner
takes a cost object and per-group steps, which `plan_terms` makes for the apps and jobs.
"""
from tfprune.latency.runtimes import (DEFAULT, RUNTIMES, LatencyError,  # noqa: F401
                                      parse_round_to, parse_runtime)


def plan_terms(model, target: str, round_to, runtime: str | None = None, ignore=(),
               cache=None, log=print):
    """(round_to, cost) for `tfprune.pruner.prune_model` / `tfprune.core.plan.make_plan`:
    round_to "auto" becomes {group id: step} from the runtime's tile; with target "latency" or
    a named runtime, cost is the runtime's `GraphCost` of `model` (timed or read from
    `cache`, a `tfprune.latency.cache.LatencyCache`), else None."""
    round_to = parse_round_to(round_to)
    if round_to != "auto" and target != "latency" and runtime is None:
        return round_to, None
    from tfprune.core import graph as graph_mod
    from tfprune.latency.model import LatencyModel

    g = graph_mod.build_graph(model, ignore=ignore)
    lm = LatencyModel(runtime or DEFAULT, cache, log)
    steps = lm.auto_steps(g) if round_to == "auto" else round_to
    if target != "latency" and runtime is None:
        return steps, None
    per_group = steps if isinstance(steps, dict) else {x.id: steps for x in g.prunable_groups()}
    return steps, lm.graph_cost(g, per_group, model)
