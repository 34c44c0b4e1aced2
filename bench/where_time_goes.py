"""Where jobd's time goes on PostgreSQL at max_concurrent 16: one drain, looked at three ways.

    python -m bench.where_time_goes [--n 2000] [--max-concurrent 16] [--no-strace]

N manual runs of the peers' job (`sh -c 'date +%s.%N >> FILE'`) are queued to
start a few seconds after the daemon is up, so that the probes are attached
before the first claim:

1. statements: the daemon's connections carry `log_min_duration_statement = 0`
   in their own options (no server or database setting changes), and the
   server log's lines from those backends are counted per run: each line is
   one message the daemon sent, so one round trip; `;`-joined statements in
   one message are counted apart.
2. py-spy (when installed, e.g. `pip install py-spy` in any venv and on PATH):
   which thread the samples fall in, and the hottest frames.
3. the same drain with and without a cgroup per run (JOBD_RUN_CGROUPS=off).
4. strace -c on the daemon's threads: system calls per run (a drain of its own;
   strace slows the daemon).

Prints what it found; BENCHMARKS.md's "Where the time goes" is written from it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import log, postgres_schema
from bench.jobd_side import JobdSetup, count_lines
from bench.probes import (
    Watched,
    postgres_backends,
    read_times,
    span_rate,
    wait_stamps,
    work_command,
)
from bench.throughput import insert_queued

SERVER_LOG = Path(
    os.environ.get("JOBD_BENCH_POSTGRES_LOG", "/var/log/postgresql/postgresql-15-main.log")
)
DELAY = 4.0  # seconds between the daemon being ready and the first run being claimable
LOG_LINE = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] .*?LOG:\s+duration: ([\d.]+) ms\s+statement: (.*)$")


class _Setup(JobdSetup):
    """A daemon with extra environment (JOBD_RUN_CGROUPS=off: no cgroup per run)."""

    extra_env: dict[str, str] = {}  # replaced per instance, before the daemon starts

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.extra_env}


@contextlib.contextmanager
def drain_daemon(
    n: int, max_concurrent: int, log_statements: bool, cgroups: bool = True
) -> Iterator[dict[str, Any]]:
    """A PostgreSQL daemon with n runs queued to start DELAY s from now; yields its pid
    and stamp file, then waits until the runs have started and stops it."""
    workdir = Path(tempfile.mkdtemp(prefix="jobd-where-"))
    try:
        with postgres_schema() as url:
            if log_statements:
                url += "%20-clog_min_duration_statement%3D0"
            setup = _Setup("postgresql", workdir, url, {"max_concurrent": max_concurrent})
            setup.extra_env = {} if cgroups else {"JOBD_RUN_CGROUPS": "off"}
            stamps = workdir / "stamps"
            setup.write_config({"t": {"command": work_command(stamps), "overlap": "allow"}})
            setup.apply()
            setup.start()
            try:
                insert_queued(url, "t", n, delay=DELAY)
                assert setup.proc is not None
                info: dict[str, Any] = {"pid": setup.proc.pid, "stamps": stamps, "url": url}
                yield info
                info["backends"] = postgres_backends([setup.proc.pid])
                wait_stamps(stamps, n, None, quiet=15, deadline=time.monotonic() + 120 + n / 20)
                info["rate"] = span_rate(read_times(stamps))
            finally:
                setup.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def statements(n: int, max_concurrent: int) -> dict[str, Any]:
    """Messages (round trips) and statements per run, by kind, from the server log."""
    if not os.access(SERVER_LOG, os.R_OK):
        log(f"  {SERVER_LOG} not readable: statements not counted")
        return {}
    offset = SERVER_LOG.stat().st_size
    spy = shutil.which("py-spy")
    with drain_daemon(n, max_concurrent, log_statements=True) as info:
        profile = None
        if spy:
            profile = Path(tempfile.mkstemp(prefix="jobd-spy-", suffix=".txt")[1])
            sampler = subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(info["pid"]),
                    "--threads",
                    "--nonblocking",
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--output",
                    str(profile),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        seen = set(postgres_backends([info["pid"]]))
        deadline = time.monotonic() + 120 + n / 20
        while count_lines(info["stamps"]) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        seen.update(postgres_backends([info["pid"]]))
        info["seen"] = seen
        if spy:
            sampler.send_signal(2)  # py-spy writes its profile on SIGINT
            sampler.wait(30)
    messages, kinds, total_ms, shapes, shape_ms = read_server_log(offset, info["seen"])
    result = {
        "rate": info.get("rate"),
        "messages_per_run": messages / n,
        "statements_per_run": sum(kinds.values()) / n,
        "server_ms_per_run": total_ms / n,
        "kinds": {kind: count / n for kind, count in kinds.most_common()},
        "messages": {
            shape: (count / n, shape_ms[shape] / count) for shape, count in shapes.most_common(10)
        },
    }
    if profile is not None:
        result["threads"], result["frames"] = _spy_summary(profile)
        profile.unlink(missing_ok=True)
    return result


def read_server_log(
    offset: int, backends: set[int]
) -> tuple[
    int, collections.Counter[str], float, collections.Counter[str], collections.Counter[str]
]:
    """The server log's statement lines from these backends, after `offset`: how many
    messages, statements by kind, their total duration, and each message's shape."""
    wanted = {str(pid) for pid in backends}
    messages, kinds, total_ms = 0, collections.Counter(), 0.0
    shapes: collections.Counter[str] = collections.Counter()  # one message's statements
    shape_ms: collections.Counter[str] = collections.Counter()
    current: tuple[float, list[str]] | None = None  # a message's duration and statements

    def close(message: tuple[float, list[str]] | None) -> None:
        nonlocal messages, total_ms
        if message is None:
            return
        duration, text = message
        messages += 1
        total_ms += duration
        # Statements held back by jobd ride in front of the next one, joined by ";\n".
        parts = [statement_kind(p) for p in "\n".join(text).split(";\n") if p.strip()]
        kinds.update(parts)
        shape = "+".join(f"{n}x {k}" if n > 1 else k for k, n in _runs(parts))
        shapes[shape] += 1
        shape_ms[shape] += duration

    with SERVER_LOG.open(errors="replace") as handle:
        handle.seek(offset)
        for line in handle:
            if line.startswith("\t"):  # the next line of the message being logged
                if current is not None:
                    current[1].append(line.strip())
                continue
            close(current)
            current = None
            match = LOG_LINE.match(line)
            if match and match.group(1) in wanted:
                current = (float(match.group(2)), [match.group(3)])
        close(current)
    return messages, kinds, total_ms, shapes, shape_ms


def _runs(items: list[str]) -> list[tuple[str, int]]:
    """Consecutive repeats folded: [a, a, b] -> [(a, 2), (b, 1)]."""
    folded: list[tuple[str, int]] = []
    for item in items:
        if folded and folded[-1][0] == item:
            folded[-1] = (item, folded[-1][1] + 1)
        else:
            folded.append((item, 1))
    return folded


def trigger_statements(n: int) -> dict[str, Any]:
    """What one manual trigger costs the caller (the operation `jobd trigger` runs, in
    this process): seconds per call, messages to the server and their shapes."""
    if not os.access(SERVER_LOG, os.R_OK):
        return {}
    from jobd.ops.context import Context
    from jobd.ops.runs import trigger

    with drain_daemon(0, 16, log_statements=False) as info:
        url = info["url"] + "%20-clog_min_duration_statement%3D0"
        scope = Context(config_path=None, store_override=url).scope()
        trigger(scope, "bench", "t")  # connects
        backends = set(postgres_backends([os.getpid()]))
        offset = SERVER_LOG.stat().st_size
        began = time.perf_counter()
        for _ in range(n):
            trigger(scope, "bench", "t")
        seconds = time.perf_counter() - began
        messages, _kinds, total_ms, shapes, shape_ms = read_server_log(offset, backends)
    return {
        "ms_per_trigger": seconds / n * 1000,
        "messages_per_trigger": messages / n,
        "server_ms_per_trigger": total_ms / n,
        "shapes": {s: (c / n, shape_ms[s] / c) for s, c in shapes.most_common(12)},
    }


def statement_kind(statement: str) -> str:
    """A statement's shape: its verb and the table it touches."""
    words = statement.split()
    verb = words[0].upper()
    upper = [w.upper().strip('"(') for w in words]
    for marker in ("FROM", "INTO", "UPDATE"):
        if marker in upper[:40]:
            at = upper.index(marker)
            if at + 1 < len(words):
                return f"{verb} {words[at + 1].strip(chr(34)).lower()}"
    return verb


def _spy_summary(path: Path) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Share of samples per thread, and per function: innermost jobd frame (`in`) and
    every jobd function on the stack (`under`, inclusive)."""
    threads: collections.Counter[str] = collections.Counter()
    frames: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        parts = stack.split(";")
        total += count
        threads[parts[0]] += count
        inner = next((p for p in reversed(parts) if "jobd/" in p), parts[-1])
        frames[f"in {inner}"] += count
        for name in {_function(p) for p in parts[1:] if "jobd/" in p}:
            frames[f"under {name}"] += count
    if not total:
        return {}, []
    return (
        {name: count / total for name, count in threads.most_common(6)},
        [(name, count / total) for name, count in frames.most_common(40)],
    )


def _function(frame: str) -> str:
    """py-spy's 'name (path:line)' without the line: 'name (path)'."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0].rstrip(')')})"


def syscalls(n: int, max_concurrent: int) -> dict[str, Any]:
    """strace -c on the daemon's own threads (not its children, so not the jobs nor
    the fork children before exec): system calls per run, the commonest first."""
    strace = shutil.which("strace")
    if not strace:
        log("  strace not installed: system calls not counted")
        return {}
    report = Path(tempfile.mkstemp(prefix="jobd-strace-")[1])
    with drain_daemon(n, max_concurrent, log_statements=False) as info:
        while count_lines(info["stamps"]) < 1:  # the spawn threads exist from here on
            time.sleep(0.01)
        tids = [task.name for task in Path(f"/proc/{info['pid']}/task").iterdir()]
        tracer = subprocess.Popen(
            [strace, "-c", "-o", str(report), *[a for t in tids for a in ("-p", t)]],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        began = count_lines(info["stamps"])
        while count_lines(info["stamps"]) < n:
            time.sleep(0.05)
        runs = count_lines(info["stamps"]) - began
        tracer.send_signal(2)
        tracer.wait(30)
    counts = {}
    for line in report.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0].replace(".", "").isdigit() and fields[-1] != "total":
            counts[fields[-1]] = int(fields[3])
    report.unlink(missing_ok=True)
    ordered = sorted(counts.items(), key=lambda kv: -kv[1])[:15]
    return {name: calls / max(1, runs) for name, calls in ordered}


def containment(n: int, max_concurrent: int) -> dict[str, dict[str, float]]:
    """The same drain with a cgroup per run (jobd's default where it can make one)
    and without (JOBD_RUN_CGROUPS=off): rate, and daemon CPU per run."""
    found = {}
    for label, cgroups in (("cgroup per run", True), ("JOBD_RUN_CGROUPS=off", False)):
        with drain_daemon(n, max_concurrent, log_statements=False, cgroups=cgroups) as info:
            pid = info["pid"]
            watched = Watched(lambda pid=pid: [pid], postgres_backends)
            got = wait_stamps(
                info["stamps"], n, watched, quiet=15, deadline=time.monotonic() + 120 + n / 20
            )
            found[label] = {
                "rate": span_rate(read_times(info["stamps"])),
                "cpu_ms": got.get("cpu_ms", float("nan")),
                "store_cpu_ms": got.get("store_cpu_ms", float("nan")),
            }
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.where_time_goes")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--max-concurrent", type=int, default=16)
    parser.add_argument(
        "--parts",
        default="statements,trigger,containment,strace",
        help="comma-separated: statements, trigger, containment, strace",
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    log(f"statements and samples, drain of {args.n:,} at max_concurrent {args.max_concurrent}")
    found = statements(args.n, args.max_concurrent) if "statements" in parts else {}
    for key in ("rate", "messages_per_run", "statements_per_run", "server_ms_per_run"):
        if key in found and found[key] is not None:
            print(f"{key}: {found[key]:.2f}")
    for kind, per_run in found.get("kinds", {}).items():
        print(f"  {per_run:6.2f}/run  {kind}")
    for shape, (per_run, mean_ms) in found.get("messages", {}).items():
        print(f"  message {per_run:6.2f}/run {mean_ms:7.2f} ms  {shape}")
    for name, share in found.get("threads", {}).items():
        print(f"thread {share:6.1%}  {name}")
    for name, share in found.get("frames", []):
        print(f"frame  {share:6.1%}  {name}")
    log("manual triggers, one by one")
    got = trigger_statements(200) if "trigger" in parts else {}
    if got:
        print(
            f"trigger: {got['ms_per_trigger']:.2f} ms each, {got['messages_per_trigger']:.2f} "
            f"messages, {got['server_ms_per_trigger']:.2f} ms in the server"
        )
        for shape, (per, mean_ms) in got["shapes"].items():
            print(f"  message {per:6.2f}/trigger {mean_ms:7.2f} ms  {shape}")
    log("containment: a cgroup per run, and none")
    compared = containment(args.n, args.max_concurrent) if "containment" in parts else {}
    for label, got in compared.items():
        print(
            f"{label}: {got['rate']:.0f} runs/s, {got['cpu_ms']:.2f} CPU ms/run "
            f"(+{got['store_cpu_ms']:.2f} PostgreSQL)"
        )
    if "strace" in parts:
        log("system calls (strace -c -f), a second drain")
        for name, per_run in syscalls(args.n, args.max_concurrent).items():
            print(f"  {per_run:7.2f}/run  {name}")


if __name__ == "__main__":
    main()
