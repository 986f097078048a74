"""Andon analytics: the functional core (plain data in, results out; no I/O, no database).

Inputs are the pandas frames storage produces (``periods``, ``stops``, ``intervals``; see
``analytics.ledger`` for the columns and the accounting rules). Modules:

- ``ledger``: every second into one OEE class; ``OeeTotals`` (summed seconds and counts)
- ``oee``: OEE / TEEP / waterfall / six big losses / ISO 22400-2 view, roll-ups and time series
- ``buckets``: hour / shift / day / week buckets in the site's time zone
- ``line``: starved/blocked attribution, line OEE and each machine's contribution
- ``downtime``: stop list, stops needing a reason, Pareto tables
- ``machine_reliability``: failures, MTBF, MTTR, inherent availability, Weibull fit
- ``shift_report``: target vs actual per shift with OEE and top stops
"""

from analytics.downtime import pareto, stop_list, unassigned_stops
from analytics.ledger import OeePolicy, OeeTotals, build_ledger, classify_stops
from analytics.line import LineOeeResult, LineSpec, attribute_starved_blocked, line_oee
from analytics.machine_reliability import FailurePolicy, MachineReliability, WeibullFit, machine_reliability
from analytics.oee import OeeBucket, OeeResult, compute_oee, oee_by, oee_from_totals, oee_series, rollup
from analytics.shift_report import ShiftReportRow, shift_report, shift_report_frame

__all__ = [
    "FailurePolicy",
    "LineOeeResult",
    "LineSpec",
    "MachineReliability",
    "OeeBucket",
    "OeePolicy",
    "OeeResult",
    "OeeTotals",
    "ShiftReportRow",
    "WeibullFit",
    "attribute_starved_blocked",
    "build_ledger",
    "classify_stops",
    "compute_oee",
    "line_oee",
    "machine_reliability",
    "oee_by",
    "oee_from_totals",
    "oee_series",
    "pareto",
    "rollup",
    "shift_report",
    "shift_report_frame",
    "stop_list",
    "unassigned_stops",
]
