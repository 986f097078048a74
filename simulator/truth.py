"""Ground truth of a simulated line: tables, Parquet files, true OEE and canonical events.

Tables (pandas, timestamps ``datetime64[ns, UTC]``):

- ``states``: machine_id, start, end, state (MachineState value), reason_code, fault_code, small_stop,
  failure_id -- contiguous per machine over the whole run, calendar states included;
- ``parts``: part_id, machine_id, ts (completion), product, good, reject, startup, reason_code,
  cycle_s (running seconds spent), ideal_cycle_s;
- ``failures``: failure_id, machine_id, ts, repair_end, repair_s, fault_code, reason_code, mode
  (random | degradation), degradation_onset;
- ``health``: machine_id, ts, health;   ``warnings``: machine_id, ts, code, health;
- ``telemetry``: machine_id, ts (as reported), metric, value, unit, sensor_fault ('' when clean);
- ``sensor_faults``: machine_id, metric, kind, start, end, offset_s;
- ``calendar``: start, end, kind, label.

``meta`` (meta.json) holds seed, window, line, machine order and the plant settings the OEE uses.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from andon.events import Event, MachineState, ProductionCount, StateChange, TelemetrySample

TEXT_COLUMNS = ("machine_id", "state", "reason_code", "fault_code", "product", "mode", "code", "metric", "kind",
                "label")
TABLES = ("states", "parts", "failures", "health", "warnings", "telemetry", "sensor_faults", "calendar")


@dataclass
class GroundTruth:
    states: pd.DataFrame
    parts: pd.DataFrame
    failures: pd.DataFrame
    health: pd.DataFrame
    warnings: pd.DataFrame
    telemetry: pd.DataFrame
    sensor_faults: pd.DataFrame
    calendar: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def start(self) -> pd.Timestamp:
        return pd.Timestamp(self.meta["start"])

    @property
    def end(self) -> pd.Timestamp:
        return pd.Timestamp(self.meta["end"])

    def write(self, out_dir: str | Path) -> list[Path]:
        """Write every table as Parquet plus meta.json into `out_dir`; returns the files written."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name in TABLES:
            path = out / f"{name}.parquet"
            getattr(self, name).to_parquet(path, engine="pyarrow", index=False)
            written.append(path)
        meta_path = out / "meta.json"
        meta_path.write_text(json.dumps(self.meta, indent=2, default=str), encoding="utf-8")
        written.append(meta_path)
        return written

    @classmethod
    def read(cls, out_dir: str | Path) -> GroundTruth:
        d = Path(out_dir)
        tables = {name: normalize(pd.read_parquet(d / f"{name}.parquet", engine="pyarrow")) for name in TABLES}
        meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
        return cls(**tables, meta=meta)


def normalize(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as object dtype with None for missing, whatever pandas infers (str, categorical)."""
    for col in TEXT_COLUMNS:
        if col in frame.columns and not isinstance(frame[col].dtype, pd.CategoricalDtype):
            values = frame[col].astype(object)
            frame[col] = values.where(values.notna(), None)
    return frame


# --- true OEE -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OEEFigures:
    """OEE.com figures of one machine over a window. Factors are nan where undefined (0 / 0)."""

    machine_id: str
    start: pd.Timestamp
    end: pd.Timestamp
    planned_production_s: float
    run_s: float
    running_s: float  # time in state running
    small_stop_s: float  # short stops counted as run time (performance loss)
    stop_s: float  # planned production time that is not run time
    total_count: int
    good_count: int
    reject_count: int
    ideal_s: float  # sum of ideal cycle time x count
    availability: float
    performance: float
    quality: float
    oee: float


def _ts(x: dt.datetime | pd.Timestamp | str) -> pd.Timestamp:
    t = pd.Timestamp(x)
    if t.tzinfo is None:
        raise ValueError("window bounds must carry a time zone")
    return t.tz_convert("UTC")


def _overlap_s(starts: pd.Series, ends: pd.Series, a: pd.Timestamp, b: pd.Timestamp) -> float:
    if starts.empty:
        return 0.0
    s = starts.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    e = ends.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    lo, hi = a.value, b.value
    return float(np.clip(np.minimum(e, hi) - np.maximum(s, lo), 0, None).sum()) / 1e9


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def true_oee(
    truth: GroundTruth,
    machine_id: str,
    start: dt.datetime | pd.Timestamp | str | None = None,
    end: dt.datetime | pd.Timestamp | str | None = None,
) -> OEEFigures:
    """OEE of one machine over [start, end) from the truth (OEE.com definitions).

    Planned production time = the calendar's production segments, plus its planned_stop segments when
    the plant counts planned stops against availability (``meta.planned_stops_count_against_availability``).
    Run time = time running plus small stops (micro-stops, a performance loss) within planned production
    time. Performance = sum(ideal cycle time of the part's product) / run time, Quality = good / total,
    parts counted at their completion timestamp.
    """
    a = _ts(start) if start is not None else truth.start
    b = _ts(end) if end is not None else truth.end
    cal = truth.calendar
    ppt_kinds = ["production"]
    if truth.meta.get("planned_stops_count_against_availability", True):
        ppt_kinds.append("planned_stop")
    ppt_rows = cal[cal["kind"].isin(ppt_kinds)]
    ppt = _overlap_s(ppt_rows["start"], ppt_rows["end"], a, b)
    st = truth.states[truth.states["machine_id"] == machine_id]
    run_rows = st[st["state"] == MachineState.RUNNING.value]
    small_rows = st[(st["state"] == MachineState.UNPLANNED_STOP.value) & st["small_stop"]]
    running = _overlap_s(run_rows["start"], run_rows["end"], a, b)
    small = _overlap_s(small_rows["start"], small_rows["end"], a, b)
    run = running + small
    pr = truth.parts
    sel = pr[(pr["machine_id"] == machine_id) & (pr["ts"] >= a) & (pr["ts"] < b)]
    total = len(sel)
    reject = int(sel["reject"].sum())
    good = total - reject
    ideal = float(sel["ideal_cycle_s"].sum())
    availability = _ratio(run, ppt)
    performance = _ratio(ideal, run)
    quality = _ratio(good, total)
    return OEEFigures(
        machine_id=machine_id,
        start=a,
        end=b,
        planned_production_s=ppt,
        run_s=run,
        running_s=running,
        small_stop_s=small,
        stop_s=ppt - run,
        total_count=total,
        good_count=good,
        reject_count=reject,
        ideal_s=ideal,
        availability=availability,
        performance=performance,
        quality=quality,
        oee=availability * performance * quality,
    )


# --- canonical events ---------------------------------------------------------------------------------


def _none_if_missing(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    return v


def truth_to_events(
    truth: GroundTruth,
    *,
    source_id: str = "sim",
    include_states: bool = True,
    include_counts: bool = True,
    include_telemetry: bool = True,
    count_batch_s: float | None = None,
    start: dt.datetime | pd.Timestamp | str | None = None,
    end: dt.datetime | pd.Timestamp | str | None = None,
) -> Iterator[Event]:
    """The truth as canonical events, per kind in time order (states, then counts, then telemetry).

    One StateChange per state interval (with reason and fault codes), one ProductionCount per part or,
    with ``count_batch_s``, per machine and batch window (stamped at the window's last completion), one
    TelemetrySample per telemetry row (reported timestamps; out-of-range sentinels included, they are
    finite). Sequence ids are stable, so pushing the same truth twice stores it once.
    """
    a = _ts(start) if start is not None else truth.start
    b = _ts(end) if end is not None else truth.end
    if include_states:
        st = truth.states[(truth.states["start"] >= a) & (truth.states["start"] < b)]
        for mid, ts, state, reason, fault in zip(
            st["machine_id"], st["start"], st["state"], st["reason_code"], st["fault_code"], strict=True
        ):
            yield StateChange(
                machine_id=mid,
                ts=ts.to_pydatetime(),
                state=MachineState(state),
                source_id=source_id,
                reason_code=_none_if_missing(reason),
                fault_code=_none_if_missing(fault),
                seq=f"{mid}:{ts.value}",
            )
    if include_counts:
        pr = truth.parts[(truth.parts["ts"] >= a) & (truth.parts["ts"] < b)]
        if count_batch_s is None:
            for pid, mid, ts, product, reject in zip(
                pr["part_id"], pr["machine_id"], pr["ts"], pr["product"], pr["reject"], strict=True
            ):
                yield ProductionCount(
                    machine_id=mid,
                    ts=ts.to_pydatetime(),
                    total=1,
                    reject=int(bool(reject)),
                    source_id=source_id,
                    product=_none_if_missing(product),
                    seq=f"{mid}:{pid}",
                )
        else:
            width = int(count_batch_s * 1e9)
            if width <= 0:
                raise ValueError("count_batch_s must be > 0")
            frame = pr.assign(
                window=(pr["ts"].astype("int64") - a.value) // width,
                product=pr["product"].astype(object).where(pr["product"].notna(), ""),
            )
            grouped = frame.groupby(["machine_id", "window", "product"], sort=True, observed=True).agg(
                ts=("ts", "max"), total=("part_id", "size"), reject=("reject", "sum")
            )
            for (mid, window, product), row in grouped.sort_values("ts").iterrows():
                yield ProductionCount(
                    machine_id=mid,
                    ts=row["ts"].to_pydatetime(),
                    total=int(row["total"]),
                    reject=int(row["reject"]),
                    source_id=source_id,
                    product=product or None,
                    seq=f"{mid}:{window}:{product}",
                )
    if include_telemetry:
        tm = truth.telemetry[(truth.telemetry["ts"] >= a) & (truth.telemetry["ts"] < b)]
        for mid, ts, metric, value, unit in zip(
            tm["machine_id"], tm["ts"], tm["metric"], tm["value"], tm["unit"], strict=True
        ):
            yield TelemetrySample(
                machine_id=mid,
                ts=ts.to_pydatetime(),
                metric=metric,
                value=float(value),
                source_id=source_id,
                unit=unit,
                seq=f"{mid}:{metric}:{ts.value}",
            )
