"""`python -I -m jobd.runs.kinds.call module:function`: runs a `call` job in a child
process, so that a crash or a hang in user code can never take the daemon down.

It starts isolated (-I), so jobd itself is imported from where it was installed,
never from the job's working directory. Only then is the job's own code made
importable: its working directory and the job's PYTHONPATH, ahead of the rest
as `python -m` would put them. From then on a `jobd` package in that directory
changes nothing: jobd is already imported, and its modules come from its own
package directory.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping


def job_path(environ: Mapping[str, str]) -> list[str]:
    """Where the job's own modules are looked for: its cwd, then its PYTHONPATH."""
    extra = [entry for entry in environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    return [os.getcwd(), *extra]


def main(argv: list[str]) -> int:
    target = argv[1]
    module_name, _, attribute = target.partition(":")
    sys.path[:0] = job_path(os.environ)
    obj = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    result = obj()
    if isinstance(result, int) and not isinstance(result, bool):
        return result
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
