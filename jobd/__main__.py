import os
import sys

# `python -m jobd` put the working directory first on sys.path. jobd is imported
# already; what it imports later (a driver, on first use) must not come from
# wherever jobd happened to be started, which may be writable by others.
if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from jobd.cli import main  # after the path is fixed, on purpose

main()
