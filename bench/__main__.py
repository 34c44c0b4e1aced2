"""`python -m bench`: measure jobd and APScheduler 3.11 on this machine, write BENCHMARKS.md.

    bench/run                  # creates the venvs if needed, then the full run
    bench/run --quick          # smaller K, shorter windows, no `others`
    python -m bench --only fire,throughput --no-write

Plain scripts, not tests: figures depend on the machine and on whatever else
runs on it, so the load average is recorded beside them. Only this harness's own
sections of BENCHMARKS.md are replaced; other sections are kept.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import (
    api_load,
    cron_math,
    fire,
    hosts,
    idle,
    observe,
    peers,
    precision,
    scale,
    throughput,
)
from bench.common import (
    POSTGRES_DSN,
    ROOT,
    aps_version,
    ensure_aps_venv,
    log,
    postgres_available,
    run_aps,
)
from bench.report import merge, owned_headings, section_rows, table

PARTS = (
    "cron", "idle", "precision", "throughput", "fire", "peers", "scale", "hosts", "api",
    "observe", "others",
)  # fmt: skip
TITLE = "# Benchmarks"
OTHER_SCRIPTS = (
    ("cli_latency.py", "CLI latency"),
    ("failover.py", "Failover"),
)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller K and shorter windows")
    parser.add_argument("--only", help=f"comma-separated parts: {','.join(PARTS)}")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--no-write", action="store_true", help="print, do not write the file")
    args = parser.parse_args()
    # A quick run leaves out the separate scripts (`others`) unless asked for: each
    # has its own --quick, and together they take longer than all the rest.
    default = [p for p in PARTS if not (args.quick and p == "others")]
    parts = args.only.split(",") if args.only else default
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")

    quick = args.quick
    ks = [500] if quick else [1000, 10_000]
    window = 10 if quick else 60
    precision_s = 15 if quick else 60
    runs_n = 300 if quick else 5000

    began = time.monotonic()
    load_before = os.getloadavg()
    ensure_aps_venv()
    postgres = not args.no_postgres and postgres_available()
    sections: list[tuple[str, str]] = []
    checks: list[tuple[str, bool, str]] = []
    timings: list[tuple[str, float]] = []

    def timed(name: str, func):
        started = time.monotonic()
        result = func()
        timings.append((name, time.monotonic() - started))
        return result

    if "cron" in parts:
        log("cron math")
        cfg = {"mode": "cron", "count": 300 if quick else 2000, "repeat": 1 if quick else 2}
        result = timed("cron", lambda: run_aps(cfg))
        sections.append(("cron-math", cron_math.section(result)))
    if "idle" in parts and "precision" in parts:
        results, idle_results = timed(
            "precision+idle",
            lambda: precision.with_idle(
                precision_s, window, postgres, alongside=quick, jobs=2000 if quick else 10_000
            ),
        )
        sections.append(("idle", idle.section(idle_results)))
        sections.append(("precision", precision.section(results, precision_s, quick)))
        checks += idle.check(idle_results) + precision.check(results)
    elif "idle" in parts:
        idle_results = timed("idle", lambda: idle.measure(window, postgres))
        sections.append(("idle", idle.section(idle_results)))
        checks += idle.check(idle_results)
    elif "precision" in parts:
        results = timed("precision", lambda: precision.measure(precision_s, postgres))
        sections.append(("precision", precision.section(results, precision_s)))
        checks += precision.check(results)
    if "throughput" in parts:
        results = timed("throughput", lambda: throughput.measure(runs_n, postgres))
        sections.append(("throughput", throughput.section(results)))
        checks += throughput.check(results)
    if "fire" in parts:
        results = timed("fire", lambda: fire.measure(ks, postgres))
        sections.append(("fire-latency", fire.section(results)))
        checks += fire.check(results)
    # The parts that take only (quick, postgres) and give a section and its checks.
    uniform = (("peers", peers, "peers"), ("scale", scale, "scale"))
    uniform += (("api", api_load, "http-api"), ("observe", observe, "observe"))
    for name, part, heading in uniform:
        if name in parts:
            results = timed(name, lambda part=part: part.measure(quick, postgres))
            sections.append((heading, part.section(results)))
            checks += part.check(results)
    if "hosts" in parts:
        found = timed("hosts", lambda: hosts.measure(quick)) if postgres else "no PostgreSQL"
        sections.append(("hosts", hosts.section(found)))
        checks += hosts.check(found)

    output = Path(args.output)
    existing = output.read_text() if output.exists() else ""
    if "others" in parts:
        for script, heading in OTHER_SCRIPTS:
            if heading in owned_headings(existing):
                continue  # that script keeps its own section in the file
            if not (ROOT / "bench" / script).exists():
                continue
            body = timed(script, lambda s=script, h=heading: other_script(s, h, quick))
            if body:
                sections.append((heading.lower().replace(" ", "-"), body))

    elapsed = time.monotonic() - began
    load_after = os.getloadavg()
    # A run of some parts (--only) keeps the others' figures: its targets replace
    # only their own rows, each row says which run measured it, and the run itself
    # is listed under the full run's machine section rather than replacing it.
    partial = args.only is not None
    measured = f"{datetime.now(UTC):%Y-%m-%d %H:%M}, {git_commit().split()[0]}" + (
        ", quick" if quick else ""
    )
    if partial:
        row = [measured, ", ".join(parts), *run_figures(load_before, load_after, elapsed, timings)]
        head: list[tuple[str, str | None]] = [
            ("machine", None),
            ("partial-runs", partial_runs_section(existing, row)),
        ]
    else:
        run = machine_section(
            quick, postgres, load_before, load_after, elapsed, timings, "peers" in parts
        )
        head = [("machine", run), ("partial-runs", partial_runs_section("", None))]
    if checks:
        kept = section_rows(existing, "targets") if partial else []
        head.append(("targets", targets_section(checks, measured, kept)))
    all_sections: list[tuple[str, str | None]] = [*head, *sections]
    if args.no_write:
        for _name, body in all_sections:
            if body is not None:
                print(body + "\n")
    else:
        merge(output, all_sections, TITLE)
        log(f"wrote {output}")
    for what, ok, figures in checks:
        log(f"{'ok  ' if ok else 'MISS'} {what}: {figures}")
    log(f"done in {elapsed:.0f}s")


def other_script(script: str, heading: str, quick: bool) -> str | None:
    """Another engineer's benchmark, run as its author meant it; its printed table kept."""
    path = ROOT / "bench" / script
    if not path.exists():
        return None
    log(f"{heading.lower()}: bench/{script}")
    argv = [sys.executable, str(path), *(["--quick"] if quick else [])]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=900)
    out = result.stdout.strip()
    lines = [f"## {heading}", f"From `{' '.join(['python', f'bench/{script}', *argv[2:]])}`:"]
    if out.lstrip().startswith("|") or "\n|" in out:
        lines.append(out)
    else:
        lines.append("```\n" + (out or "(no output)") + "\n```")
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["?"]
        lines.append(f"It exited with status {result.returncode}: {tail[0]}")
    return "\n\n".join(lines)


def machine_section(
    quick: bool,
    postgres: bool,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    elapsed: float,
    timings: list[tuple[str, float]],
    with_peers: bool = False,
) -> str:
    command = os.environ.get("BENCH_COMMAND") or shlex.join(
        ["python", "-m", "bench", *sys.argv[1:]]
    )
    load, wall = run_figures(load_before, load_after, elapsed, timings)
    rows = [
        ["date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")],
        ["command", f"`{command}`"],
        ["cores (`nproc`)", str(os.cpu_count())],
        ["CPU", cpu_model()],
        ["memory", memory_total()],
        ["OS", f"{platform.system()} {platform.release()}"],
        ["Python", platform.python_version()],
        ["SQLite", sqlite3.sqlite_version],
        ["PostgreSQL", postgres_version() if postgres else "not measured"],
        ["jobd commit", git_commit()],
        ["APScheduler", aps_version()],
        *(peers.versions() if with_peers else []),
        ["load average (1 min) before → after", load],
        ["wall time", wall],
    ]
    return "\n\n".join(
        [
            "## Machine and run",
            table(["", ""], rows),
            "Other work may share the machine (the load average shows how much); "
            "every latency is measured within one run, jobd and its peers back to back.",
        ]
    )


def targets_section(
    checks: list[tuple[str, bool, str]], measured: str, kept: list[list[str]]
) -> str:
    """This run's targets, then those of earlier runs (`kept` rows) that it did not check."""
    rows = [
        [what, figures, "met" if ok else "**missed**", measured] for what, ok, figures in checks
    ]
    done = {row[0] for row in rows}
    for row in kept:
        if row and row[0] not in done:
            # Rows written before the column existed name no run: the full run's.
            rows.append([*row, "the full run"][:4] if len(row) < 4 else row[:4])
    return "\n\n".join(
        [
            "## Targets",
            "Checked on the figures of the run each row names (*measured*). Start latencies "
            "are given two ways: the "
            "*recorded start* is the run's `started_at` in the store (the claim, after "
            "which jobd spawns the child at once); *the child's own clock* is the time "
            "the job process itself reads as it begins, after fork, exec and bash's "
            "start-up, which for many runs at once is bound by how fast this machine "
            "creates processes (see the spawn floor under Fire latency).",
            table(["target", "figures", "result", "measured"], rows),
        ]
    )


def run_figures(
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    elapsed: float,
    timings: list[tuple[str, float]],
) -> tuple[str, str]:
    """A run's load average before → after and its wall time, as BENCHMARKS.md shows them."""
    return (
        f"{load_before[0]:.2f} → {load_after[0]:.2f}",
        f"{elapsed:.0f} s (" + ", ".join(f"{n} {t:.0f} s" for n, t in timings) + ")",
    )


def partial_runs_section(existing: str, row: list[str] | None) -> str:
    """Runs of some parts since the full run (those listed in `existing`, then `row`):
    when, which parts, the load they ran at, how long they took."""
    rows = section_rows(existing, "partial-runs") + ([row] if row else [])
    body = (
        table(["run", "parts", "load average before → after", "wall time"], rows)
        if rows
        else "None since the full run above."
    )
    return "\n\n".join(
        [
            "## Partial runs since",
            "`python -m bench --only PARTS` replaces those parts' sections and target rows "
            "and is listed here; the machine section above is the last full run's.",
            body,
        ]
    )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def postgres_version() -> str:
    import psycopg2

    conn = psycopg2.connect(POSTGRES_DSN)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            return str(cur.fetchone()[0])
    finally:
        conn.close()


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "jobd")
    return commit + (" (with uncommitted changes to jobd/)" if dirty else "")


if __name__ == "__main__":
    main()
