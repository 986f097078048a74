"""`andon train`: fit, evaluate and store a predictive-maintenance model version for a line, site or plant."""

from __future__ import annotations

import argparse
import json
import sys

from api.windows import parse_instant


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--line", help="train on this line's machines")
    p.add_argument("--site", help="train on this site's machines")
    p.add_argument("--start", help="training window start (ISO time; default: end - ANDON_PDM_TRAIN_DAYS)")
    p.add_argument("--end", help="training window end (ISO time; default: now)")
    p.add_argument("--horizon-h", type=float, help="H of 'fails within H hours' (default 24)")
    p.add_argument("--target-fault-codes", help="comma-separated fault codes (prefix* allowed) to foresee; "
                   "default ANDON_PDM_TARGET_FAULT_CODES, else every failure")
    p.add_argument("--force", action="store_true", help="promote even if it evaluates worse than the current one")
    p.add_argument("--database-url", help="default: ANDON_DATABASE_URL")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from andon import pdm
    from andon.settings import get_settings
    from andon.storage import db

    if args.line and args.site:
        print("andon: give --line or --site, not both", file=sys.stderr)
        return 2
    scope = f"line:{args.line}" if args.line else f"site:{args.site}" if args.site else "plant"
    overrides = {}
    if args.horizon_h:
        overrides["horizon_h"] = args.horizon_h
    if args.target_fault_codes:
        overrides["target_fault_codes"] = [c.strip() for c in args.target_fault_codes.split(",") if c.strip()]
    settings = pdm.PdmSettings(**overrides)
    try:
        start = parse_instant(args.start, "start") if args.start else None
        end = parse_instant(args.end, "end") if args.end else None
        report = pdm.train(args.database_url or get_settings().database_url, scope=scope, start=start, end=end,
                           settings=settings, force=args.force)
    except (db.DatabaseError, ValueError, LookupError) as exc:
        print(f"andon: {exc}", file=sys.stderr)
        return 1
    m = report.metrics
    if args.json:
        print(json.dumps({"version": report.version, "status": report.status, "reason": report.reason,
                          "train_start": report.train_start.isoformat(), "train_end": report.train_end.isoformat(),
                          "metrics": pdm._jsonable(m)}, default=str))
        return 0
    cv = m.get("cv", {})
    print(f"model version {report.version} for {scope}: {report.status} ({report.reason})")
    print(f"  window {report.train_start:%Y-%m-%d %H:%M} .. {report.train_end:%Y-%m-%d %H:%M} UTC, "
          f"{m.get('machines')} machines, {m.get('in_scope_failures')} in-scope failures, {m.get('samples')} samples")
    if m.get("cv_auc") is not None:
        print(f"  GroupKFold by machine ({m.get('cv_folds')} folds): AUC {m['cv_auc']:.3f}, "
              f"average precision {m.get('cv_average_precision') or float('nan'):.3f}")
    else:
        print(f"  {m.get('note', 'no supervised model')}")
    print(f"  out-of-fold: warned 4-24 h ahead {cv.get('warned')}/{cv.get('failures')}, premature "
          f"{cv.get('premature')}, false alarms per machine-week {cv.get('false_alarms_per_machine_week')}, "
          f"precision@k {cv.get('precision_at_k')}")
    return 0 if report.status == "promoted" else 3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="andon train", description=__doc__)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
