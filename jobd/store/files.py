"""The files of a SQLite store, and how jobd opens them safely as root.

A SQLite store is a file, the -wal/-shm (or -journal) files SQLite keeps beside
it, and jobd's companions: the leader lock, the wake sockets and the liveness
locks. The companions live in one private directory, `<store>.d/` (0700):

    jobd.db  jobd.db-wal  jobd.db-shm
    jobd.db.d/leader  jobd.db.d/wake/<pid>-<id>.sock  jobd.db.d/instances/<instance>

Whoever can write any of these can define jobs, and jobs run as root under a
root daemon. So, as root (the config file gets the same check, as cron's
crontabs do), jobd refuses:

- a store, -wal, -shm, -journal or companion owned by another user or writable
  by group or others, or that is a symbolic link (jobd follows no link it did
  not make; nothing in the store's directory should be one);
- a store directory owned by another user or writable by group or others, even
  sticky as /tmp is: whoever can write it can plant a -wal that SQLite replays
  into the store the next time it opens it;
- a directory above it that another user owns, or that others can write without
  the sticky bit (they could rename the store's directory and put their own).

Companions are opened with O_NOFOLLOW all the same, for every user. Other users
keep today's behaviour: their own files in their own directories are theirs.

Companions of an older jobd, before this layout (`<store>.leader`, `<store>.wake/`,
`<store>.instances/`), are left alone, and a note says they can be removed once
no older jobd uses the store. Only the old wake directory is still used: its
sockets are poked (when it passes the same checks), so that a daemon not
restarted since the upgrade hears `jobd trigger` at once.
"""

from __future__ import annotations

import errno
import os
import stat

from jobd.errors import ConfigError, StoreUnavailable

SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
LEGACY_COMPANIONS = (".leader", ".wake", ".instances")


def companion_dir(database: str) -> str:
    return database + ".d"


def leader_lock_path(database: str) -> str:
    return os.path.join(companion_dir(database), "leader")


def wake_dir(database: str) -> str:
    return os.path.join(companion_dir(database), "wake")


def instances_dir(database: str) -> str:
    return os.path.join(companion_dir(database), "instances")


def refuse_unless_roots(path: str | os.PathLike[str], info: os.stat_result) -> None:
    """Refuse a file or directory that a user other than root could have written.

    Whoever can write jobd's config, its store or the files beside the store can
    run commands as root; cron refuses such a crontab for the same reason. The
    one check for all of them (jobd.store.files applies it to the store's)."""
    if info.st_uid != 0:
        raise ConfigError("refused: owned by a user other than root (as cron does)", file=str(path))
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError("refused: writable by group or others (as cron does)", file=str(path))


def _as_root() -> bool:
    return os.geteuid() == 0


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def refuse_unsafe(path: str, info: os.stat_result) -> None:
    """A link anywhere, and as root a file another user could have written."""
    if stat.S_ISLNK(info.st_mode):
        raise ConfigError("refused: a symbolic link (jobd follows none it did not make)", file=path)
    if _as_root():
        refuse_unless_roots(path, info)


def check_store_files(database: str) -> None:
    """As root, refuse a store whose files or directory others could have written
    (see the module's docstring). Raises ConfigError naming the path and why."""
    if not _as_root():
        return
    directory = os.path.dirname(os.path.abspath(database))
    _check_directories(directory)
    for path in (database, *(database + side for side in SQLITE_SIDE_FILES)):
        info = _lstat(path)
        if info is not None:
            refuse_unsafe(path, info)
    companions = companion_dir(database)
    info = _lstat(companions)
    if info is not None:
        refuse_unsafe(companions, info)
        for path in (leader_lock_path(database), wake_dir(database), instances_dir(database)):
            info = _lstat(path)
            if info is not None:
                refuse_unsafe(path, info)


def _check_directories(directory: str) -> None:
    """The store's directory: root's and written by nobody else. Those above it:
    root's, and written by others only with the sticky bit (as /tmp). A link on
    the way must be root's; its target is checked as the directory it stands for."""
    real = os.path.realpath(directory)
    if real != directory:
        _check_links_on_the_way(directory)
    info = os.stat(real)
    refuse_unless_roots(directory, info)
    parent = os.path.dirname(real)
    while True:
        info = os.stat(parent)
        others_write = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if info.st_uid != 0 or (others_write and not info.st_mode & stat.S_ISVTX):
            refuse_unless_roots(parent, info)
        if parent == os.path.dirname(parent):
            return
        parent = os.path.dirname(parent)


def _check_links_on_the_way(directory: str) -> None:
    path = os.sep
    for part in directory.split(os.sep):
        if not part:
            continue
        path = os.path.join(path, part)
        info = _lstat(path)
        if info is not None and stat.S_ISLNK(info.st_mode) and info.st_uid != 0:
            raise ConfigError("refused: a symbolic link owned by a user other than root", file=path)


def private_dir(path: str) -> str:
    """Create `path` 0700 unless it exists (and the companion directory above it
    first); refuse a link, or as root a directory others could write. Returns `path`."""
    parent = os.path.dirname(path)
    if parent.endswith(".d") and _lstat(parent) is None:
        companions(parent[: -len(".d")])
    old = os.umask(0o077)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    finally:
        os.umask(old)
    info = os.lstat(path)
    refuse_unsafe(path, info)
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError("refused: not a directory", file=path)
    return path


def is_private_dir(path: str) -> bool:
    """A directory that passes private_dir()'s checks, without creating it."""
    info = _lstat(path)
    if info is None or not stat.S_ISDIR(info.st_mode):
        return False
    try:
        refuse_unsafe(path, info)
    except ConfigError:
        return False
    return True


def legacy_wake_dir(database: str) -> str:
    """Where a jobd before `<store>.d/` listens: still poked, so that a daemon not
    restarted since an upgrade hears `jobd trigger` at once."""
    return database + ".wake"


def companions(database: str) -> str:
    """The private companion directory of the store at `database`, made on first use."""
    directory = companion_dir(database)
    if _lstat(directory) is None:
        _note_legacy_companions(database)
    return private_dir(directory)


def _note_legacy_companions(database: str) -> None:
    old = [database + suffix for suffix in LEGACY_COMPANIONS if _lstat(database + suffix)]
    if old:
        # Here, not at the top: `jobd executions` reaches the store's files on its
        # fast path (jobd.cli), which must not pay for loading logging.
        import logging

        logging.getLogger("jobd").warning(
            "jobd's lock and socket files now live in %s; the older ones (%s) are no "
            "longer used: remove them once no older jobd runs on this store",
            companion_dir(database),
            ", ".join(old),
            extra={"action": "store.files"},
        )


def open_companion(path: str, flags: int) -> int:
    """os.open() of a companion file: 0600, never through a link."""
    old = os.umask(0o077)
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(
                "refused: a symbolic link (jobd follows none it did not make)", file=path
            ) from None
        raise
    finally:
        os.umask(old)


class StoreIdentity:
    """Which file the store is: a daemon that keeps writing to a store someone
    deleted or replaced writes into a file nobody will ever read again."""

    def __init__(self, database: str) -> None:
        self.database = database
        info = os.stat(database)
        self._identity = (info.st_dev, info.st_ino)

    def check(self) -> None:
        """Raises StoreVanished when the path no longer names the file opened."""
        try:
            info = os.stat(self.database)
        except FileNotFoundError:
            raise StoreVanished(self.database, "deleted") from None
        except OSError:
            return  # not ours to judge: the store's own queries will say
        if (info.st_dev, info.st_ino) != self._identity:
            raise StoreVanished(self.database, "replaced")


class StoreVanished(StoreUnavailable):
    def __init__(self, database: str, how: str) -> None:
        self.database = database
        self.how = how
        super().__init__(
            f"store {database} was {how} while jobd was using it; stopping rather than "
            "recording runs where nobody will read them (restore it, or start jobd again "
            "to create a new, empty store)"
        )


class MissingStore(StoreUnavailable):
    """A SQLite store that is not there, given to a command that must not create it."""

    def __init__(self, database: str) -> None:
        self.database = database
        super().__init__(
            f"no store at {database} (`jobd run`, `jobd trigger NAME --local` or "
            "`jobd schedule` creates it)"
        )


def missing_store(database: str) -> StoreUnavailable:
    return MissingStore(database)
