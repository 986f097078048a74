"""JIT readiness: which buffers can go, which must stay, and what to fix first (issue 7).

Pure core (no I/O): measured inputs per machine (``inputs``) -> station models with common random
numbers (``model``) -> batched what-if simulation and the marginal-gain buffer search (``whatif``) ->
analytic cross-checks (``analytic``) -> verdict, evidence and ranked blockers (``readiness``).
"""

from analytics.jit.inputs import MachineInputs, StopSample, measure_machines
from analytics.jit.model import Improvement, StationModel, WorkSet, draw_work, station_model
from analytics.jit.readiness import LINE_MODEL, Blocker, LineSetup, Readiness, ReadinessSettings, assess, what_if
from analytics.jit.whatif import Estimates, Scenario, SearchResult, evaluate, grow, trim

__all__ = [
    "LINE_MODEL",
    "Blocker",
    "Estimates",
    "Improvement",
    "LineSetup",
    "MachineInputs",
    "Readiness",
    "ReadinessSettings",
    "Scenario",
    "SearchResult",
    "StationModel",
    "StopSample",
    "WorkSet",
    "assess",
    "draw_work",
    "evaluate",
    "grow",
    "measure_machines",
    "station_model",
    "trim",
    "what_if",
]
