"""The zygote: one process with the shim's code loaded, forked into a shim per task.

A Python interpreter started afresh costs ~3 MiB of private memory before it
has imported anything, and the shim's modules ~2.5 MiB more: an exec'd shim
costs about twice containerd's. Forked children share all those pages with
the zygote and with each other until they write to them; ``gc.freeze()`` keeps
the collector from touching (and so copying) the objects loaded here. A shim
then pays only for what it does itself.

Protocol on stdin/stdout, one line each: the runtime writes a task directory,
the zygote answers ``ok`` once that task's shim has daemonized (as an exec'd
``python -S -I <shim> <task dir>`` would have exited), or ``error <reason>``.
EOF on stdin (the runtime stopped or died) ends the zygote; the shims it made
live on, in sessions of their own, and the next runtime starts a new zygote.
"""

from __future__ import annotations

import gc
import os
import sys

# Everything a shim may need, loaded once here rather than in every shim.
import urllib.parse  # noqa: F401  (log URIs)

from services.runtime.shim import server
from services.runtime.shim.proc import write_atomic


def _child(task_dir: str) -> int:
    """In the forked child: become the shim (daemonizing), or say why not."""
    os.dup2(2, 1)  # stdout is the zygote's reply channel: never write on it from here
    try:
        server.run(task_dir)
    except BaseException as e:  # before daemonizing this reaches the runtime's log
        import traceback

        traceback.print_exc()
        return 2 if isinstance(e, OSError) else 1
    return 0


def serve(runtime_dir: str) -> None:
    os.setsid()  # no terminal's signals; the runtime's end is EOF on stdin
    server.set_name(b"berth-zygote")
    pid_file = os.path.join(runtime_dir, "zygote.pid")
    write_atomic(pid_file, str(os.getpid()))
    gc.freeze()
    try:
        for line in sys.stdin.buffer:
            task_dir = line.decode().strip()
            if not task_dir:
                continue
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = _child(task_dir)
                finally:
                    os._exit(code)  # the daemonized shim ends here too, never in this loop
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            reply = "ok" if code == 0 else f"error the shim exited with {code}"
            sys.stdout.write(reply + "\n")
            sys.stdout.flush()
    finally:
        try:
            with open(pid_file) as f:
                if f.read().strip() == str(os.getpid()):
                    os.unlink(pid_file)
        except OSError:
            pass
