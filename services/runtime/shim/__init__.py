"""berth's task shim: one small process per task, the parent of the container's processes.

Run as ``python -S -I services/runtime/shim <task dir>`` by the runtime service;
it imports only the standard library and as little of it as it can, so that
each shim costs little memory. It

* daemonizes (the runtime can restart while containers run), becomes the child
  subreaper, and runs ``runc`` (or ``crun``) for the task (``task.py``);
* holds the processes' stdio: copies between the client's FIFOs (or a log file)
  and the processes' pipes or pty, or starts a logging binary (``stdio.py``), so
  a client going away never kills them;
* records every exit durably (``<task dir>/exit`` for the init process) before
  telling anyone, watches the container's memory cgroup for OOM kills
  (``oom.py``), and answers a control socket (``server.py``): one JSON request
  per line, one JSON reply per line; ``subscribe`` streams events.

``<task dir>/shim.json`` (written by the runtime) says what to run. The shim
exits after ``delete`` of the init process.
"""
