"""The `andon` command: services, db, serve, collect, simulate, demo and friends."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from andon.settings import REPO_ROOT, get_settings


def _fail(msg: str) -> int:
    print(f"andon: {msg}", file=sys.stderr)
    return 1


def cmd_services(args: argparse.Namespace) -> int:
    if args.action != "up":
        return _fail(f"unknown services action {args.action!r}")
    script = REPO_ROOT / "scripts" / "services.sh"
    if not script.exists():
        return _fail(f"{script} is missing; run from a checkout of the Andon repository")
    if os.geteuid() != 0:
        return _fail("`andon services up` installs Debian packages and starts services: run it as root")
    return subprocess.call(["bash", str(script)])


def cmd_db(args: argparse.Namespace) -> int:
    from andon.plant import PlantModelError, load_plant_model
    from andon.storage import db, plant_sync

    settings = get_settings()
    url = args.database_url or settings.database_url
    if args.action == "upgrade":
        try:
            for line in db.upgrade(url):
                print(line)
            plant_file = Path(args.plant) if args.plant else settings.plant_file
            if plant_file.exists():
                model = load_plant_model(plant_file)
                with db.connect(url) as conn:
                    version = plant_sync.sync_plant_model(conn, model, f"file:{plant_file.resolve()}")
                    conn.commit()
                print(f"plant model {plant_file}: " + (f"synced as version {version}" if version else "unchanged"))
            elif args.plant:
                return _fail(f"{plant_file}: no such plant model file")
            print("database is up to date")
        except (db.DatabaseError, PlantModelError) as exc:
            return _fail(str(exc))
        return 0
    if args.action == "check":
        try:
            with db.connect(url) as conn:
                db.check_schema(conn)
                st = db.timescale_status(conn)
            print(f"schema up to date; timescaledb {st['installed_version']} ({st['license']} edition)")
        except db.DatabaseError as exc:
            return _fail(str(exc))
        return 0
    if args.action == "refresh":
        from andon.storage import rollups

        with db.connect(url) as conn:
            stats = rollups.refresh(conn)
            conn.commit()
        print(f"refreshed {stats.machines} machines: {stats.periods_written} periods, {stats.stops_written} stops")
        return 0
    return _fail(f"unknown db action {args.action!r}")


def cmd_keys(args: argparse.Namespace) -> int:
    from andon.storage import db, keys

    url = args.database_url or get_settings().database_url
    try:
        with db.connect(url) as conn:
            if args.action == "create":
                if not args.role or not args.name:
                    return _fail("keys create needs --role and --name")
                key, token = keys.create_key(conn, args.name, args.role)
                conn.commit()
                print(f"created {key.role} key '{key.name}' (id {key.id}, prefix {key.prefix})")
                print(f"token (shown once, store it now): {token}")
            elif args.action == "list":
                for k in keys.list_keys(conn):
                    state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
                    print(f"{k.id:>4}  {k.prefix}  {k.role:<10}  {state:<24}  {k.name}")
            elif args.action == "revoke":
                if not args.key:
                    return _fail("keys revoke needs --key PREFIX_OR_ID")
                if not keys.revoke_key(conn, args.key):
                    return _fail(f"no active key {args.key!r}")
                conn.commit()
                print(f"revoked {args.key}")
    except (db.DatabaseError, ValueError) as exc:
        return _fail(str(exc))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    host = args.host or settings.api_host
    port = args.port or settings.api_port
    print(f"Andon API on http://{host}:{port}/ (docs at /docs)")
    uvicorn.run("api.app:create_app", factory=True, host=host, port=port, log_level=settings.log_level.lower())
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    try:
        from collector.runtime import main as collect_main
    except ImportError:
        return _fail("the collector runtime is not available in this build")
    return collect_main(args)


def cmd_simulate(args: argparse.Namespace) -> int:
    try:
        from simulator.cli import run
    except ImportError:
        return _fail("the simulator is not available in this build")
    return run(args)


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from andon.demo import main as demo_main
    except ImportError:
        return _fail("the demo is not available in this build")
    return demo_main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="andon", description="Equipment reliability, OEE and JIT readiness.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("services", help="install (if missing) and start PostgreSQL+TimescaleDB and Mosquitto")
    s.add_argument("action", choices=["up"])
    s.set_defaults(func=cmd_services)

    s = sub.add_parser("db", help="database schema and plant model")
    s.add_argument("action", choices=["upgrade", "check", "refresh"])
    s.add_argument("--database-url", help="default: ANDON_DATABASE_URL")
    s.add_argument("--plant", help="plant model file to sync (default: ANDON_PLANT_FILE)")
    s.set_defaults(func=cmd_db)

    s = sub.add_parser("keys", help="API keys: create, list, revoke")
    s.add_argument("action", choices=["create", "list", "revoke"])
    s.add_argument("--role", choices=["gateway", "viewer", "maintainer", "admin"])
    s.add_argument("--name")
    s.add_argument("--key", help="prefix or id of the key to revoke")
    s.add_argument("--database-url")
    s.set_defaults(func=cmd_keys)

    s = sub.add_parser("serve", help="run the API and dashboards")
    s.add_argument("--host", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int)
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("collect", help="run the collectors declared in the sources file")
    s.add_argument("--sources", help="sources file (default: ANDON_SOURCES_FILE)")
    s.add_argument("--check", action="store_true", help="connect to every source, report, and exit")
    s.add_argument("--metrics-port", type=int, default=9108, help="Prometheus metrics on 127.0.0.1:PORT")
    s.set_defaults(func=cmd_collect)

    s = sub.add_parser("simulate", help="simulate a line with ground truth (fast) or serve it over OPC UA/MQTT")
    try:
        from simulator.cli import add_arguments

        add_arguments(s)
    except ImportError:
        pass
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("train", help="fit, evaluate and store a predictive-maintenance model")
    from andon.pdm_cli import add_arguments as pdm_arguments
    from andon.pdm_cli import run as pdm_run

    pdm_arguments(s)
    s.set_defaults(func=pdm_run)

    s = sub.add_parser("demo", help="everything on a simulated line: services, simulator, collectors, API, board")
    s.add_argument("--port", type=int, default=None)
    s.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=get_settings().log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
