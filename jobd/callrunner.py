"""`python -m jobd.callrunner module:function`: runs a `call` job in a child process,
so that a crash or a hang in user code can never take the daemon down."""

from __future__ import annotations

import importlib
import sys


def main(argv: list[str]) -> int:
    target = argv[1]
    module_name, _, attribute = target.partition(":")
    sys.path.insert(0, "")
    obj = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    result = obj()
    if isinstance(result, int) and not isinstance(result, bool):
        return result
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
