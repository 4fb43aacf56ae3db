"""``python -S -I <repo>/services/runtime/shim <task dir>``: start a task's shim."""

import os
import sys

# -I leaves this directory first on sys.path; the shim's modules are found from the
# root that holds the ``services`` package instead.
here = os.path.dirname(os.path.abspath(__file__))
sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(here)))

from services.runtime.shim.server import main  # noqa: E402

main()
