"""Other schedulers' definitions → `[jobs.*]` TOML. Pure: text and rows in, text out.

`jobd import crontab` and `jobd import pg-cron` (cli/imports.py) do the reading;
everything here is testable without a file or a database. The output always
parses with jobd.core.config.parse.parse_config; what does not translate becomes a
comment that says why, never a silently different job.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from jobd.core.config.fields import ENV_NAME, JOB_NAME
from jobd.core.cron import NICKNAMES, CronError, parse_schedule

NAME_CHARS = 48  # derived names stay short enough to type
# Programs that run the interesting word that follows them: `php artisan …`, `sh backup.sh`.
RUNNERS = frozenset((
    "sh", "bash", "dash", "zsh", "ksh", "python", "python2", "python3", "php", "perl", "ruby",
    "node", "nice", "ionice", "flock", "timeout", "env", "sudo", "exec", "run-parts", "nohup",
    "chronic", "cronic",
))  # fmt: skip
GUARDS = frozenset(("cd", "test", "[", "true", ":"))
# Programs whose name alone says little: the first argument joins it in a job's name.
TOOLS = frozenset((
    "curl", "wget", "http", "echo", "printf", "logger", "find", "rm", "cp", "mv", "rsync",
    "tar", "touch", "mysql", "psql", "mysqldump", "pg_dump", "docker", "kubectl", "systemctl",
    "manage", "artisan", "console", "rake", "make", "npm", "yarn", "git",
))  # fmt: skip
ENV_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)")
MAIL_VARS = ("MAILTO", "MAILFROM", "CONTENT_TYPE", "CONTENT_TRANSFER_ENCODING")
STDIN_DELIMITER = "JOBD_STDIN"
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass
class Job:
    """One job to print: its table's keys in order, with comments above it."""

    name: str
    keys: dict[str, Any]
    comments: list[str] = field(default_factory=list)


# -- TOML output --------------------------------------------------------------------------


def toml_string(text: str) -> str:
    """A TOML basic string. json.dumps is close, but TOML also forbids a raw DEL."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_string(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def comment(text: str) -> str:
    """One comment line per line of `text`; no line of it can end the comment, and
    control characters (which TOML forbids even in comments) are spelt out."""
    lines = [CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", line) for line in text.splitlines()]
    return "\n".join("# " + line if line else "#" for line in lines or [""])


def render(header: Sequence[str], jobs: Sequence[Job], databases: Mapping[str, str]) -> str:
    out = [comment(line) for line in header]
    if databases:
        out += ["", "[databases]"]
        out += [f"{toml_key(name)} = {toml_string(url)}" for name, url in databases.items()]
    for job in jobs:
        out.append("")
        out += [comment(line) for line in job.comments]
        out.append(f"[jobs.{toml_key(job.name)}]")
        out += [f"{toml_key(k)} = {toml_value(v)}" for k, v in job.keys.items()]
    return "\n".join(out) + "\n"


# -- names -----------------------------------------------------------------------------


def slug(text: str) -> str:
    cleaned = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return cleaned[:NAME_CHARS].rstrip("_")


def name_from_command(command: str) -> str:
    """A job name from what a command runs: `/usr/local/bin/backup.sh --full` → backup,
    `cd /srv/app && php artisan schedule:run` → artisan_schedule_run,
    `curl -fsS https://example.com/ping` → curl_example_com_ping."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        words = command.split()
    # The first `&&`/`||`/`;` part that is not a `cd` or a `test`: what the line is for.
    parts: list[list[str]] = [[]]
    for word in words:
        if word in ("&&", ";", "||", "|"):
            parts.append([])
        elif word not in ("{", "}", "(", ")"):
            parts[-1].append(word.rstrip(";"))
    parts = [p for p in parts if p and p[0] not in GUARDS] or [words]
    chosen: list[str] = []
    arguments = iter(parts[0])
    for word in arguments:
        if ENV_LINE.fullmatch(word) or word.startswith(("-", ">", "<", "2>", "&")):
            continue
        if word[:1].isdigit() and chosen and chosen[-1] in ("timeout", "nice"):
            continue
        base = word.rstrip("/").rsplit("/", 1)[-1]
        base = re.sub(r"\.(sh|py|pl|rb|php|js|bash)$", "", base)
        chosen.append(base)
        if base not in RUNNERS or len(chosen) >= 3:
            break
    meaningful = [w for w in chosen if w not in RUNNERS] or chosen
    if meaningful and meaningful[-1] in TOOLS:
        # `curl`, `echo` or `manage` alone says little, and several lines share it.
        subject = next((_subject(w) for w in arguments if _is_argument(w)), "")
        meaningful.append(subject)
    return slug("_".join(meaningful)) or "job"


def job_names(commands: Sequence[str]) -> list[str]:
    """A unique, readable name per command: where two share a name, each takes its
    first argument too (backup_incremental, backup_full), and only then a number."""
    bases = [name_from_command(command) for command in commands]
    shared = {base for base in bases if bases.count(base) > 1}
    taken: set[str] = set()
    names = []
    for base, command in zip(bases, commands, strict=True):
        if base in shared and (detail := _first_argument(command, base)):
            base = slug(f"{base}_{detail}") or base
        names.append(unique(base, taken))
    return names


def _first_argument(command: str, program: str) -> str:
    """The word after `program`'s own word in `command`, without leading dashes."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        words = command.split()
    for index, word in enumerate(words):
        if slug(re.sub(r"\.(sh|py|pl|rb|php|js|bash)$", "", word.rsplit("/", 1)[-1])) == program:
            following = words[index + 1 : index + 2]
            if following and not following[0].startswith((">", "<", "2>", "&", "|")):
                return _subject(following[0].lstrip("-"))
    return ""


def _is_argument(word: str) -> bool:
    return not (ENV_LINE.fullmatch(word) or word.startswith(("-", ">", "<", "2>", "&", "$")))


def _subject(word: str) -> str:
    """What an argument names: a URL's host and last path segment, a path's file name."""
    if "://" in word:
        rest = word.split("://", 1)[1].split("?", 1)[0].rstrip("/")
        host, _, path = rest.partition("/")
        last = path.rsplit("/", 1)[-1]
        stem = re.sub(r"\.[a-z]+$", "", last)
        return f"{host}_{stem}" if stem else host
    return re.sub(r"\.(sh|py|pl|rb|php|js|bash)$", "", word.rstrip("/").rsplit("/", 1)[-1])


def unique(name: str, taken: set[str]) -> str:
    """`name`, or name_2, name_3 … when it is taken; always a valid job name."""
    base = name if JOB_NAME.fullmatch(name) else slug(name) or "job"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}_{n}"
    taken.add(candidate)
    return candidate


# -- crontab -------------------------------------------------------------------------------


def split_percent(command: str) -> tuple[str, str | None]:
    """cron's `%`: the first unescaped one ends the command and starts its stdin, the
    others are newlines; `\\%` is a literal %. Returns (command, stdin or None)."""
    pieces, current, i = [], [], 0
    while i < len(command):
        char = command[i]
        if char == "\\" and command[i + 1 : i + 2] == "%":
            current.append("%")
            i += 2
            continue
        if char == "%":
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    pieces.append("".join(current))
    if len(pieces) == 1:
        return pieces[0], None
    return pieces[0], "\n".join(pieces[1:])


def with_stdin(command: str, stdin: str) -> str:
    """The command fed `stdin` through a quoted here-document (no expansion, as cron)."""
    delimiter = STDIN_DELIMITER
    while delimiter in stdin.splitlines():
        delimiter += "_"
    # cron ends the input with a newline unless it has one; a here-document always does.
    body = stdin[:-1] if stdin.endswith("\n") else stdin
    return f"{command.rstrip()} <<'{delimiter}'\n{body}\n{delimiter}"


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except Exception:  # ZoneInfo raises several types for odd names
        return False
    return True


@dataclass
class _CronState:
    """What a crontab's assignment lines set for the entries below them."""

    timezone: str | None
    env: dict[str, str] = field(default_factory=dict)
    shell: str = "/bin/sh"
    jitter: str | None = None

    def assign(self, name: str, value: str, where: str, notes: list[str]) -> None:
        if name == "SHELL":
            self.shell = value or "/bin/sh"
        elif name in ("CRON_TZ", "TZ"):
            if _valid_zone(value):
                self.timezone = value
            else:
                notes.append(f"{where}: unknown time zone {value!r} ignored")
            if name == "TZ":
                self.env[name] = value
        elif name in MAIL_VARS:
            notes.append(
                f"{where}: {name}={value}: jobd keeps each run's output in its log "
                "(jobd logs ID); use on_failure to alert"
            )
        elif name == "RANDOM_DELAY" and value.isdigit():
            self.jitter = f"{value}m" if value != "0" else None
        else:
            self.env[name] = value


def _cron_entry(
    line: str, where: str, state: _CronState, system: bool, source: str, notes: list[str]
) -> tuple[str, dict[str, Any], list[str]] | None:
    """One entry as (command, job keys, comments); None, with a note, when skipped."""
    fields = line.split(None, 1 if line.startswith("@") else 5)
    if line.startswith("@"):
        schedule, rest = fields[0], (fields[1] if len(fields) > 1 else "")
        if schedule == "@reboot":
            notes.append(
                f"{where}: @reboot is unsupported (jobd fires on a clock, not at boot; "
                f"start it from the service manager instead): {line}"
            )
            return None
        if schedule not in NICKNAMES:
            notes.append(f"{where}: unknown schedule {schedule!r}, skipped: {line}")
            return None
    else:
        if len(fields) < 6:
            notes.append(f"{where}: not a cron entry, skipped: {line}")
            return None
        schedule, rest = " ".join(fields[:5]), fields[5]
    user = None
    if system:
        parts = rest.split(None, 1)
        if len(parts) < 2:
            notes.append(f"{where}: no user and command, skipped: {line}")
            return None
        user, rest = parts
    try:
        parse_schedule(schedule)
    except CronError as exc:
        notes.append(f"{where}: {exc}, skipped: {line}")
        return None
    command, stdin = split_percent(rest)
    if not command.strip():
        notes.append(f"{where}: no command, skipped: {line}")
        return None
    comments = [f"{source} {where}: {line}"]
    if stdin is not None:
        command = with_stdin(command, stdin)
        comments.append("cron's % lines became the command's stdin (a here-document)")
    keys: dict[str, Any] = {"schedule": schedule}
    if state.timezone:
        keys["timezone"] = state.timezone
    if state.shell == "/bin/sh":
        keys["shell"] = command
    else:
        keys["command"] = [state.shell, "-c", command]
    if state.env:
        keys["env"] = {k: v for k, v in state.env.items() if ENV_NAME.fullmatch(k)}
    if user:
        keys["user"] = user
    if state.jitter:
        keys["jitter"] = state.jitter
    return split_percent(rest)[0], keys, comments


def crontab_to_toml(
    text: str, source: str = "crontab", system: bool = False, timezone: str | None = None
) -> str:
    """A crontab (user format, or with `system` the /etc/crontab format with a user
    column) as `[jobs.*]` TOML. `timezone` is the zone cron would have used (the
    host's); CRON_TZ= and TZ= lines override it for the entries below them."""
    state = _CronState(timezone)
    notes: list[str] = []
    entries: list[tuple[str, dict[str, Any], list[str]]] = []  # command, keys, comments
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"line {number}"
        assignment = ENV_LINE.fullmatch(line)
        if assignment and not line[0].isdigit():
            state.assign(assignment.group(1), _unquote(assignment.group(2)), where, notes)
        elif entry := _cron_entry(line, where, state, system, source, notes):
            entries.append(entry)
    names = job_names([command for command, _keys, _comments in entries])
    jobs = [
        Job(name, keys, comments) for name, (_c, keys, comments) in zip(names, entries, strict=True)
    ]
    header = [
        f"Generated by `jobd import crontab` from {source}: review, then add to jobd.toml.",
        "Job names come from the commands: rename a [jobs.NAME] table as you like",
        "before the first `jobd run` (afterwards a new name starts a new history).",
        "Differences from cron: jobd records every run's output instead of mailing it;",
        'a fire while the last run still goes on is skipped (overlap = "skip"; cron',
        'starts another: say overlap = "allow"); after downtime the latest missed fire',
        'runs (catchup = "latest"; cron runs none: say catchup = "none").',
    ]
    if timezone is None:
        header.append(
            "cron used the host's local time; these jobs use jobd's [jobd] timezone "
            "(default UTC) unless they say otherwise."
        )
    header += notes
    return render(header, jobs, {})


# -- pg_cron ---------------------------------------------------------------------------


def pg_cron_schedule(schedule: str) -> str:
    """pg_cron's schedule syntax in jobd's: `N seconds` → `@every Ns`, `$` (the last
    day of the month) → `L`."""
    seconds = re.fullmatch(r"\s*(\d+)\s*seconds?\s*", schedule)
    if seconds:
        return f"@every {int(seconds.group(1))}s"
    fields = schedule.split()
    if len(fields) == 5 and "$" in fields[2]:
        fields[2] = fields[2].replace("$", "L")
    return " ".join(fields)


def database_url(dsn: str, database: str, user: str | None, host: str | None) -> str:
    """The URL a pg_cron job ran against: the DSN's server (or the job's nodename), the
    job's database and user, never a password."""
    parts = urlsplit(dsn)
    netloc = parts.hostname or ""
    if host and host not in ("localhost", "127.0.0.1", "::1", ""):
        netloc = host
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    login = user if user is not None else parts.username
    if login:
        netloc = f"{quote(login, safe='')}@{netloc}"
    # Keep connection options such as sslmode; drop a password given as one.
    query = "&".join(
        p for p in parts.query.split("&") if p and not p.lower().startswith("password=")
    )
    return urlunsplit(("postgresql", netloc, "/" + quote(database, safe=""), query, ""))


def pg_cron_to_toml(
    rows: Iterable[Mapping[str, Any]], dsn: str, source: str = "cron.job", timezone: str = "UTC"
) -> str:
    """cron.job rows (jobid, jobname, schedule, command, database, username, active,
    and nodename when present) as `sql` jobs, each with the same name, schedule and
    time zone (pg_cron's cron.timezone, UTC by default)."""
    jobs: list[Job] = []
    databases: dict[str, str] = {}
    by_target: dict[tuple[str, str | None, str | None], str] = {}
    taken: set[str] = set()
    notes: list[str] = []
    for row in rows:
        jobid = row.get("jobid")
        wanted = row.get("jobname") or f"pg_cron_{jobid}"
        name = unique(wanted, taken)
        comments = [f"pg_cron job {jobid}" + (f" {wanted!r}" if name != wanted else "")]
        schedule = pg_cron_schedule(str(row["schedule"]))
        try:
            parse_schedule(schedule)
        except CronError as exc:
            notes.append(f"pg_cron job {jobid} ({wanted}) skipped: {exc}")
            continue
        target = (str(row.get("database") or ""), row.get("username"), row.get("nodename"))
        if target not in by_target:
            key = unique(slug(target[0] or "postgres") or "db", set(databases))
            databases[key] = database_url(dsn, target[0] or "postgres", target[1], target[2])
            by_target[target] = key
        keys: dict[str, Any] = {
            "description": f"pg_cron job {jobid}",
            "schedule": schedule,
            "timezone": timezone,
            "sql": str(row["command"]),
            "database": by_target[target],
        }
        if row.get("active") is False:
            keys["enabled"] = False
        jobs.append(Job(name, keys, comments))
    header = [
        f"Generated by `jobd import pg-cron` from {source}: review, then add to jobd.toml.",
        "The database URLs carry no password: give jobd's service user a ~/.pgpass, or",
        "write postgresql://user:${DB_PASSWORD}@host/db and set DB_PASSWORD in the",
        "daemon's environment (jobs do not inherit PGPASSWORD unless secret_env names",
        "it). pg_cron runs a job again only once the last run",
        'ended, as jobd\'s overlap = "skip" does; unlike pg_cron, jobd keeps every',
        "run's output (jobd logs ID), retries (retries = N) and chains (on_success).",
        *notes,
    ]
    return render(header, jobs, databases)
