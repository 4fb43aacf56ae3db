"""Start shims: ``python -S -I <repo>/services/runtime/shim <task dir>`` runs one;
``... --zygote <runtime state dir>`` runs the zygote that forks them (zygote.py)."""

import os
import sys

# -I leaves this directory first on sys.path; the shim's modules are found from the
# root that holds the ``services`` package instead.
here = os.path.dirname(os.path.abspath(__file__))
sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(here)))

if sys.argv[1:2] == ["--zygote"]:
    from services.runtime.shim import zygote

    zygote.serve(sys.argv[2])
else:
    from services.runtime.shim import server

    server.main()
