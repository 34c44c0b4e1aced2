"""Cron math: microseconds per next-fire computation, jobd.core.cron against croniter and cronsim.

Runs inside bench/.venv-aps (croniter is installed there only, never in jobd's
environment), with this checkout on sys.path for jobd.core.cron. Each library gets
the same expressions and the same 2,000 start instants spread over a year, in
UTC and in Europe/Berlin; a computation is "the next fire after this instant",
including whatever per-call set-up the library needs. jobd parses an
expression once (as the daemon does) and reuses it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

EXPRESSIONS = ["*/5 * * * *", "0 9 * * 1-5", "30 2 * * *", "0 0 1 1 *", "15 */2 1-15 * *"]
ZONES = ["UTC", "Europe/Berlin"]


def _instants(count: int, tz: ZoneInfo) -> list[datetime]:
    rng = random.Random(8)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        (base + timedelta(seconds=rng.randrange(365 * 86400))).astimezone(tz) for _ in range(count)
    ]


def _time_per_call(func: Callable[[datetime], Any], instants: list[datetime], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for instant in instants:
            func(instant)
        best = min(best, (time.perf_counter() - started) / len(instants))
    return best * 1e6


def measure(cfg: dict[str, Any]) -> dict[str, Any]:
    from importlib.metadata import version

    from croniter import croniter
    from cronsim import CronSim

    from jobd.core.cron import parse_schedule

    count, repeat = cfg.get("count", 2000), cfg.get("repeat", 3)
    rows = []
    for zone_name in ZONES:
        tz = ZoneInfo(zone_name)
        instants = _instants(count, tz)
        for expr in EXPRESSIONS:
            schedule = parse_schedule(expr)
            # All three must agree before their speed means anything.
            for instant in instants[:200]:
                ours = schedule.next_after(instant, tz)
                theirs = next(CronSim(expr, instant)).astimezone(UTC)
                other = croniter(expr, instant).get_next(datetime).astimezone(UTC)
                if not ours == theirs == other:
                    raise AssertionError(f"{expr} {instant}: {ours} {theirs} {other}")
            rows.append(
                {
                    "expr": expr,
                    "tz": zone_name,
                    "jobd": _time_per_call(
                        lambda at, s=schedule, z=tz: s.next_after(at, z), instants, repeat
                    ),
                    "cronsim": _time_per_call(
                        lambda at, e=expr: next(CronSim(e, at)), instants, repeat
                    ),
                    "croniter": _time_per_call(
                        lambda at, e=expr: croniter(e, at).get_next(datetime), instants, repeat
                    ),
                }
            )
    return {
        "rows": rows,
        "versions": {
            "croniter": version("croniter"),
            "cronsim": version("cronsim"),
        },
    }


def section(result: dict[str, Any]) -> str:
    from bench.report import table

    rows = [
        [
            f"`{r['expr']}`",
            r["tz"],
            f"{r['jobd']:.1f}",
            f"{r['cronsim']:.1f}",
            f"{r['croniter']:.1f}",
            f"{r['croniter'] / r['jobd']:.1f}\u00d7",
        ]
        for r in result["rows"]
    ]
    versions = result["versions"]
    return "\n\n".join(
        [
            "## Cron math: µs per next-fire computation",
            "The next fire after an instant, for 2,000 instants spread over 2026 (best of 3 "
            "passes). jobd parses an expression once and reuses it, as its daemon does; "
            f"cronsim {versions['cronsim']} and croniter {versions['croniter']} build their "
            "iterator per call, as their APIs require. All three gave the same instants on a "
            "sample before timing.",
            table(
                ["expression", "zone", "jobd.core.cron", "cronsim", "croniter", "croniter ÷ jobd"],
                rows,
            ),
        ]
    )
