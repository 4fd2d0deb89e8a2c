"""``python -m bench``: measure ingest side by side and write BENCHMARKS.md.

Servers, one after another on 127.0.0.1, each under gunicorn with the same number
of workers and driven by the same load (wrk, or the Python generator without it):

  a  bare Flask endpoint answering 204
  b  openapi-generator's python-flask stub of webhook.yaml (Connexion 2)
  c  ninjahook on SQLite, synchronous=NORMAL (the default) and FULL
  d  ninjahook on PostgreSQL, when one is reachable

Then the alert storm (distinct activities from many concurrent senders, verified
in the database), worker start time, and the query figures of bench/query.py.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click
import sqlalchemy as sa

from bench import cache_maintenance, costs, load, routing, servers
from bench.servers import ROOT, Server

BENCHMARKS = ROOT / "BENCHMARKS.md"
BEGIN = "<!-- bench:ingest:begin (written by `make bench`; edit bench/__main__.py) -->"
END = "<!-- bench:ingest:end -->"
TOKEN = "whk_bench_token_" + "0123456789abcdef"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
ONE_ALERT_COUNT = 10_000


@dataclass
class Measured:
    """One server's figures under the timed load."""

    server: Server
    result: load.LoadResult
    cpu_ms_per_request: float
    rss_mib: list[float]


def say(message: str) -> None:
    click.echo(f"[bench {time.strftime('%H:%M:%S')}] {message}", err=True)


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        if match:
            cpu = match.group(1).strip()
    memory = ""
    with contextlib.suppress(OSError):
        match = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        if match:
            memory = f"{int(match.group(1)) / 1024 / 1024:.1f} GiB"
    wrk = "absent (Python load generator)"
    if load.wrk_available():
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        wrk = (out.stdout + out.stderr).splitlines()[0].split(" [")[0] if out else "wrk"
    return {
        "CPU": f"{os.cpu_count()} x {cpu}",
        "memory": memory,
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "load generator": wrk,
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def drive(
    server: Server,
    template: str,
    *,
    seconds: float,
    connections: int,
    generator: str,
    count: int | None = None,
) -> load.LoadResult:
    """One run of the chosen load generator against ``server``."""
    run = load.run_wrk if generator == "wrk" else load.run_python
    id_base = 10**10 + int(time.time() * 1000) % 10**9 * 10
    return run(
        server.port,
        template,
        server.token or TOKEN,
        seconds=seconds,
        connections=connections,
        id_base=id_base,
        count=count,
    )


def measure(
    server: Server,
    template: str,
    *,
    seconds: float,
    warmup: float,
    connections: int,
    generator: str,
    timed_template: str | None = None,
    count: int | None = None,
) -> Measured:
    """Warm up, then time one run (of ``timed_template`` when given, and of ``count``
    requests rather than ``seconds`` when given); CPU per request and worker RSS."""
    if warmup > 0:
        drive(server, template, seconds=warmup, connections=connections, generator=generator)
    cpu_before = server.cpu_seconds()
    result = drive(
        server,
        timed_template or template,
        seconds=seconds,
        connections=connections,
        generator=generator,
        count=count,
    )
    cpu = server.cpu_seconds() - cpu_before
    ms = 1000 * cpu / result.requests if result.requests else float("nan")
    return Measured(server, result, ms, server.worker_rss())


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str | None]:
    """A throwaway PostgreSQL database, or None when no server answers."""
    from app.storage.db import normalize_url

    try:
        admin = sa.create_engine(
            normalize_url(admin_url, Path(".")),
            isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": 3},
        )
        with admin.connect() as conn:
            name = f"ninjahook_bench_{uuid.uuid4().hex[:8]}"
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # no server, no permission: (d) is skipped, not an error
        say(f"PostgreSQL not reachable ({exc.__class__.__name__}): skipping (d)")
        yield None
        return
    url = sa.engine.make_url(normalize_url(admin_url, Path("."))).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        except sa.exc.SQLAlchemyError as exc:
            say(f"could not drop the throwaway database {name}: {exc.__class__.__name__}")
        admin.dispose()


def stored_activities(database_url: str, first_id: int, count: int) -> tuple[int, int]:
    """(rows in the storm's id range, rows in total) in the server's database."""
    from app.storage.db import normalize_url
    from app.storage.tables import activities

    engine = sa.create_engine(normalize_url(database_url, Path(".")))
    try:
        with engine.connect() as conn:
            in_range = conn.execute(
                sa.select(sa.func.count())
                .select_from(activities)
                .where(activities.c.id >= first_id, activities.c.id < first_id + count)
            ).scalar_one()
            total = conn.execute(sa.select(sa.func.count()).select_from(activities)).scalar_one()
    finally:
        engine.dispose()
    return int(in_range), int(total)


def one_alert_stored(database_url: str) -> tuple[int, int]:
    """(activities of the one-alert load's alert, links to that alert) in the database."""
    from app.storage.db import normalize_url
    from app.storage.tables import activities, alert_activities

    engine = sa.create_engine(normalize_url(database_url, Path(".")))
    try:
        with engine.connect() as conn:
            stored = conn.execute(
                sa.select(sa.func.count())
                .select_from(activities)
                .where(activities.c.series_uid == load.ONE_ALERT_SERIES)
            ).scalar_one()
            linked = conn.execute(
                sa.select(sa.func.count())
                .select_from(alert_activities)
                .where(alert_activities.c.alert_key == load.ONE_ALERT_SERIES)
            ).scalar_one()
    finally:
        engine.dispose()
    return int(stored), int(linked)


def worker_start_seconds(instance: Path, runs: int = 3) -> list[tuple[float, float, float]]:
    """(import wall, build wall, build CPU) seconds in a fresh interpreter.

    gunicorn.conf.py imports the app's modules in the master, so a worker forked from
    it only builds the app (``create_app()`` and :func:`app.web.factory.settle_heap`); the
    import is paid once, when the master starts. CPU time is the figure that other
    load on the machine leaves alone."""
    code = (
        "import time; t = time.perf_counter(); "
        "from app.web.factory import create_app, settle_heap; "
        "i = time.perf_counter() - t; t = time.perf_counter(); c = time.process_time(); "
        f"create_app({{'instance_path': {str(instance)!r}, 'webhook_tokens': {TOKEN!r}, "
        "'background_tasks': '0'}); settle_heap(); "
        "print(i, time.perf_counter() - t, time.process_time() - c)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NINJAHOOK_")}
    times = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
        if out.returncode != 0:
            raise RuntimeError(f"create_app failed: {out.stderr.strip().splitlines()[-1:]}")
        imported, wall, cpu = out.stdout.strip().splitlines()[-1].split()
        times.append((float(imported), float(wall), float(cpu)))
    return times


def fmt(value: float, digits: int = 0) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:,.{digits}f}"


def results_table(rows: list[Measured]) -> list[str]:
    lines = [
        "| server | req/s | p50 ms | p99 ms | CPU ms/request | worker RSS MiB | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in rows:
        r = m.result
        rss = " / ".join(fmt(x, 0) for x in m.rss_mib) or "-"
        lines.append(
            f"| ({m.server.label}) {m.server.description} | {fmt(r.rps)} | {fmt(r.p50_ms, 1)} "
            f"| {fmt(r.p99_ms, 1)} | {fmt(m.cpu_ms_per_request, 2)} | {rss} | {r.errors} |"
        )
    return lines


def write_section(section: str, path: Path = BENCHMARKS) -> None:
    """Replace the block between the markers (or add it after the title); keep the rest."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{section.rstrip()}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    else:
        title, _, rest = text.partition("\n")
        text = title + "\n\n" + block + ("\n" + rest.lstrip("\n") if rest.strip() else "")
    path.write_text(text)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--seconds", default=10.0, show_default=True, help="Timed load per server.")
@click.option("--warmup", default=3.0, show_default=True, help="Untimed load before each run.")
@click.option("--connections", default=16, show_default=True, help="Concurrent connections.")
@click.option("--workers", default=2, show_default=True, help="gunicorn workers per server.")
@click.option(
    "--generator",
    type=click.Choice(["auto", "wrk", "python"]),
    default="auto",
    show_default=True,
    help="Load generator; auto uses wrk when it is installed.",
)
@click.option(
    "--servers",
    "chosen_servers",
    default="a,b,c,c1,c0,c2,d",
    show_default=True,
    help="Which servers to measure (c0: ninjahook without the ingest hooks; c1: ninjahook "
    "on SQLite, 10,000 activities of one alert in random activityTime order; c2: ninjahook "
    "on SQLite with 50 routes, groups and silences).",
)
@click.option(
    "--storm", "storm_count", default=50_000, show_default=True, help="Storm size; 0 skips it."
)
@click.option("--senders", default=64, show_default=True, help="Concurrent storm senders.")
@click.option(
    "--postgres-url",
    default=lambda: os.environ.get("NINJAHOOK_TEST_DATABASE_URL") or DEFAULT_PG,
    show_default="NINJAHOOK_TEST_DATABASE_URL or " + DEFAULT_PG,
    help="PostgreSQL server for (d); a throwaway database is created there and dropped.",
)
@click.option("--no-postgres", is_flag=True, help="Skip (d).")
@click.option(
    "--storm-postgres/--no-storm-postgres",
    default=False,
    show_default=True,
    help="Also run the storm against (d) (slower: one more full storm).",
)
@click.option("--no-stub", is_flag=True, help="Skip (b) (it needs Java and PyPI on first use).")
@click.option("--query-rows", default=1_000_000, show_default=True, help="Rows for bench/query.py.")
@click.option("--no-query", is_flag=True, help="Skip the query figures.")
@click.option("--no-write", is_flag=True, help="Print the report; leave BENCHMARKS.md alone.")
def main(
    seconds: float,
    warmup: float,
    connections: int,
    workers: int,
    generator: str,
    chosen_servers: str,
    storm_count: int,
    senders: int,
    postgres_url: str,
    no_postgres: bool,
    storm_postgres: bool,
    no_stub: bool,
    query_rows: int,
    no_query: bool,
    no_write: bool,
) -> None:
    """Benchmark ingest beside a bare Flask endpoint and the generated stub; write BENCHMARKS.md."""
    if generator == "auto":
        generator = "wrk" if load.wrk_available() else "python"
    elif generator == "wrk" and not load.wrk_available():
        raise click.ClickException(
            "wrk is not installed (apt-get install wrk), use --generator python"
        )
    if generator == "python":
        say("wrk not found: using the Python load generator (slower; it shares the CPU)")
    chosen = {name.strip() for name in chosen_servers.split(",") if name.strip()}
    unknown = chosen - {"a", "b", "c", "c1", "c0", "c2", "d"}
    if unknown:
        raise click.BadParameter(f"unknown server {sorted(unknown)[0]!r}", param_hint="--servers")
    template = load.activity_template()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ninjahook-bench"
    cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    info = machine()
    measured: list[Measured] = []
    # (backend, result, (stored in range, stored in all), RSS samples per worker).
    storms: list[tuple[str, load.StormResult, tuple[int, int], list[list[float]]]] = []
    notes: list[str] = []

    with (
        tempfile.TemporaryDirectory(prefix="ninjahook-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp)
        logs = work / "logs"
        logs.mkdir()

        def run_one(
            make: Callable[[], Server], timed: str | None = None, count: int | None = None
        ) -> Measured | None:
            server = make()
            say(f"({server.label}) {server.description}: starting")
            try:
                server.start()
                m = measure(
                    server,
                    template,
                    seconds=seconds,
                    warmup=warmup,
                    connections=connections,
                    generator=generator,
                    timed_template=timed,
                    count=count,
                )
            finally:
                server.stop()
            r = m.result
            say(
                f"({server.label}) {fmt(r.rps)} req/s, p50 {fmt(r.p50_ms, 1)} ms, "
                f"p99 {fmt(r.p99_ms, 1)} ms, {fmt(m.cpu_ms_per_request, 2)} CPU ms/request, "
                f"{r.errors} errors"
            )
            measured.append(m)
            return m

        if "a" in chosen:
            run_one(lambda: servers.bare_flask(workers, logs / "a.log"))
        if "b" in chosen and not no_stub:
            try:
                run_one(lambda: servers.generated_stub(workers, work, cache, logs / "b.log", say))
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                notes.append(f"(b) could not run: {exc}")
                say(f"(b) skipped: {exc}")

        def receiver(label: str, mode: str, url: str, name: str, app: str | None = None) -> Server:
            return servers.ninjahook(
                label,
                f"ninjahook, {name}",
                app=app,
                workers=workers,
                database_url=url,
                instance=work / f"instance-{label}-{mode}",
                token=TOKEN,
                log=logs / f"{label}-{mode}.log",
                extra_env={"NINJAHOOK_SQLITE_SYNCHRONOUS": mode} if label != "d" else None,
            )

        def sqlite_url(label: str, mode: str) -> str:
            return f"sqlite:///{work / f'instance-{label}-{mode}' / 'ninjahook.sqlite3'}"

        if "c" in chosen:
            run_one(
                lambda: receiver(
                    "c", "NORMAL", sqlite_url("c", "NORMAL"), "SQLite, synchronous=NORMAL (default)"
                )
            )
            run_one(
                lambda: receiver("c", "FULL", sqlite_url("c", "FULL"), "SQLite, synchronous=FULL")
            )
        if "c1" in chosen:
            # Measured like (c) NORMAL (same warm-up of distinct alerts), but the timed
            # load is exactly ONE_ALERT_COUNT activities of one alert in random
            # activityTime order, however long they take; the database must then hold
            # exactly that many, each linked to the alert.
            run_one(
                lambda: receiver(
                    "c1",
                    "NORMAL",
                    sqlite_url("c1", "NORMAL"),
                    f"SQLite NORMAL, {ONE_ALERT_COUNT:,} activities of one alert "
                    "in random activityTime order",
                ),
                timed=load.one_alert_template(template),
                count=ONE_ALERT_COUNT,
            )
            of_alert, linked = one_alert_stored(sqlite_url("c1", "NORMAL"))
            say(f"(c1) stored {of_alert:,} activities of the alert, {linked:,} linked")
            if of_alert != ONE_ALERT_COUNT or linked != ONE_ALERT_COUNT:
                notes.append(
                    f"(c1) **stored {of_alert:,} activities of the one alert and linked "
                    f"{linked:,}, not {ONE_ALERT_COUNT:,}**"
                )
        if "c0" in chosen:
            run_one(
                lambda: receiver(
                    "c0",
                    "NORMAL",
                    sqlite_url("c0", "NORMAL"),
                    "SQLite NORMAL, without the extensions' ingest hooks (bench/core_app.py; "
                    "not what ships)",
                    app="bench.core_app:app",
                )
            )
        if "c2" in chosen:
            run_one(
                lambda: routing.with_routes(
                    receiver(
                        "c2",
                        "NORMAL",
                        sqlite_url("c2", "NORMAL"),
                        "SQLite NORMAL, 50 routes (wait, repeat, flapping, groups), 3 silences",
                    ),
                    work,
                )
            )
        pg_url = None
        if "d" in chosen and not no_postgres:
            pg_url = stack.enter_context(postgres_database(postgres_url))
        if pg_url:
            run_one(lambda: receiver("d", "PG", pg_url, "PostgreSQL"))

        # The storm, on fresh servers: exactly `storm_count` rows must land, each once.
        storm_targets = []
        if storm_count > 0:
            storm_targets.append(("c", "STORM", sqlite_url("c", "STORM"), "SQLite NORMAL"))
        if storm_count > 0 and storm_postgres and not no_postgres:
            storm_pg = stack.enter_context(postgres_database(postgres_url))
            if storm_pg:
                storm_targets.append(("d", "STORM", storm_pg, "PostgreSQL"))
        for label, mode, url, name in storm_targets:
            server = servers.ninjahook(
                label,
                f"ninjahook, {name}",
                workers=workers,
                database_url=url,
                instance=work / f"instance-{label}-{mode}",
                token=TOKEN,
                log=logs / f"storm-{label}.log",
            )
            say(f"storm on ({label}) {name}: {storm_count:,} activities from {senders} senders")
            server.start()
            try:
                first_id = 7 * 10**12
                # RSS at start, after the first tenth (caches and pools are warm by
                # then) and at the end: the last two must match for "flat".
                rss = [server.worker_rss()]
                tenth = max(1, storm_count // 10)

                def progress(
                    done: int, server: Server = server, rss: list[list[float]] = rss
                ) -> None:
                    say(f"  {done:,} delivered")
                    if len(rss) == 1:  # the first call comes after the first tenth
                        rss.append(server.worker_rss())

                result = load.storm(
                    server.port,
                    template,
                    TOKEN,
                    first_id=first_id,
                    count=storm_count,
                    senders=senders,
                    progress=progress,
                    progress_every=tenth,
                )
                rss.append(server.worker_rss())
            finally:
                server.stop()
            stored = stored_activities(url, first_id, storm_count)
            say(
                f"storm ({label}): {result.seconds:.1f} s, "
                f"{stored[0]:,} stored of {storm_count:,}, "
                f"statuses {result.statuses}"
            )
            storms.append((name, result, stored, rss))

        start_times = worker_start_seconds(work / "instance-start")
        say("in-process cost breakdown")
        stack_with_hooks = costs.stack_costs()
        stack_without_hooks = costs.stack_costs(with_hooks=False)
        per_hook = costs.hook_costs()

    a = next((m for m in measured if m.server.label == "a"), None)
    b = next((m for m in measured if m.server.label == "b"), None)
    lines = [
        "## Ingest",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make bench` (`python -m bench "
        f"--seconds {seconds:g} --connections {connections} --workers {workers}`), "
        f"{fmt(time.perf_counter() - started)} s in all.",
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in info.items()],
        "",
        f"Load: {generator}, {connections} connections, {fmt(warmup)} s warm-up then "
        f"{fmt(seconds)} s timed, one ~{len(load.render(template, 10**10))}-byte NinjaOne-shaped "
        "CONDITION activity per request, each with its own id and seriesUid. "
        f"Each server: gunicorn, {workers} workers, started alone. CPU is the server's "
        "(master and workers, from /proc) over the timed run, per request.",
        "",
        *results_table(measured),
        "",
        "| ratio (req/s) | value |",
        "|---|---:|",
    ]
    for m in measured:
        if m.server.label in ("c", "c0", "d"):
            if a:
                lines.append(
                    f"| {m.server.description} / (a) | {m.result.rps / a.result.rps:.2f} |"
                )
            if b:
                lines.append(
                    f"| {m.server.description} / (b) | {m.result.rps / b.result.rps:.2f} |"
                )
    distinct = next(
        (m for m in measured if m.server.label == "c" and "NORMAL" in m.server.description), None
    )
    one_alert = next((m for m in measured if m.server.label == "c1"), None)
    routed = next((m for m in measured if m.server.label == "c2"), None)
    if distinct and routed:
        lines.append(
            f"| (c2) 50 routes, groups, silences / (c) no routes (target ≥ 0.9) "
            f"| {routed.result.rps / distinct.result.rps:.2f} |"
        )
    if distinct and one_alert:
        lines.append(
            f"| (c1) one alert, out of order / (c) distinct alerts (target ≥ 0.8) "
            f"| {one_alert.result.rps / distinct.result.rps:.2f} |"
        )
    lines += ["", "### Alert storm", ""]
    lines += [
        "| backend | activities | senders | seconds | activities/s | stored (each once) "
        "| answers | retries | p99 ms | worker RSS MiB: start → after 10% → end |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for name, result, (in_range, total), samples in storms:
        answers = ", ".join(f"{s}: {n:,}" for s, n in sorted(result.statuses.items()))
        rss_text = " / ".join(
            " → ".join(f"{sample:.0f}" for sample in worker)
            for worker in zip(*samples, strict=False)
        )
        verdict = "yes" if in_range == total == result.activities else "**NO**"
        lines.append(
            f"| {name} | {result.activities:,} | {result.senders} | {result.seconds:.1f} "
            f"| {fmt(result.activities / result.seconds)} | {in_range:,} of {total:,}: {verdict} "
            f"| {answers} | {result.retries} | {fmt(result.p99_ms, 1)} | {rss_text} |"
        )
    lines += [
        "",
        "### Worker start",
        "",
        "gunicorn's master imports the app's modules once (gunicorn.conf.py); each worker "
        "it forks then builds the app (`create_app()` and `settle_heap()`). Three runs in "
        "fresh interpreters, import (wall) + build (wall / CPU): "
        + ", ".join(
            f"{imported:.2f} s + {wall:.2f} s / {cpu:.2f} s" for imported, wall, cpu in start_times
        )
        + ".",
    ]
    lines += ["", *costs.markdown(stack_with_hooks, stack_without_hooks, per_hook)]
    say("cache maintenance on and off")
    lines += [
        "",
        cache_maintenance.section(
            workers=workers,
            seconds=seconds,
            warmup=warmup,
            connections=connections,
            generator=generator,
            say=say,
        ),
    ]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    section = "\n".join(lines) + "\n"
    click.echo(section)
    if not no_write:
        write_section(section)
        say(f"wrote {BENCHMARKS.relative_to(ROOT)}")
    if not no_query:
        query = ROOT / "bench" / "query.py"
        if query.exists():
            say(f"query figures: python -m bench.query --rows {query_rows}")
            args = [sys.executable, "-m", "bench.query", "--rows", str(query_rows)]
            if no_write:
                args.append("--no-write")
            query_env = dict(os.environ)
            if not no_postgres:
                with postgres_database(postgres_url) as reachable:
                    if reachable:
                        # bench.query adds PostgreSQL when this names a server, as (d) does.
                        query_env["NINJAHOOK_TEST_DATABASE_URL"] = postgres_url
            subprocess.run(args, cwd=ROOT, check=True, env=query_env)
            # The dashboard charts' figures (bench/charts.py), on the same number of rows.
            subprocess.run(
                [*args[:2], "bench.charts", *args[3:]], cwd=ROOT, check=True, env=query_env
            )
        else:
            say("bench/query.py is not there yet: no query figures")


if __name__ == "__main__":
    main()
