"""The CRI streaming server: where the URLs from ``Exec`` and ``PortForward`` lead
kubelet (and kubectl).

As containerd's: HTTP on 127.0.0.1 and a port of its own, one single-use token per
request (``/exec/<token>``, ``/portforward/<token>``, valid a minute), the connection
upgraded to SPDY/3.1. For exec, Kubernetes' remote command protocol
``v4.channel.k8s.io``: the client opens an ``error`` stream and, as asked, ``stdin``,
``stdout``, ``stderr`` and (with a terminal) ``resize``; the command's streams are
copied over them, and at the end a ``metav1.Status`` on ``error`` says how it exited.
For port forwarding, ``portforward.k8s.io``: per connection the client opens an
``error`` and a ``data`` stream with the same ``requestID`` and a ``port``; the data
goes to and from that port on the pod's loopback, a failure to connect is written on
``error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from services.cri.spdy import ProtocolError, Session, Stream
from shared.api.cri.runtime.v1 import api_pb2 as cri
from shared.errors import BerthError, FailedPrecondition, InvalidArgument

log = logging.getLogger(__name__)

TOKEN_TTL = 60.0  # containerd's request cache keeps a token for a minute
MAX_TOKENS = 1000
STREAM_CREATION_TIMEOUT = 30.0
MAX_REQUEST_HEAD = 16 * 1024
PROTOCOL = "v4.channel.k8s.io"
PORT_FORWARD_PROTOCOL = "portforward.k8s.io"
COPY_CHUNK = 32 * 1024


class ExecSession(Protocol):
    """A started exec: what the server needs of the process once it runs."""

    def resize(self, width: int, height: int) -> None: ...

    def kill(self) -> None: ...

    def finish(self) -> int:
        """Wait for the exit and for the output to be copied; the exit code."""
        ...


class Executor(Protocol):
    def start_exec(
        self, request: cri.ExecRequest, stdin: Any, stdout: Any, stderr: Any
    ) -> ExecSession: ...

    def dial(self, sandbox_id: str, port: int) -> socket.socket:
        """A connection to ``port`` on the pod's own loopback."""
        ...

    def attach_target(self, request: cri.AttachRequest) -> AttachTarget: ...


class AttachTarget(Protocol):
    """A running container to attach to: its CRI log (its output), its stdin FIFO."""

    @property
    def log_path(self) -> str: ...

    @property
    def stdin(self) -> Path | None: ...

    def running(self) -> bool: ...

    def resize(self, width: int, height: int) -> None: ...


@dataclass
class _Pending:
    kind: str  # "exec" or "portforward"
    request: Any  # cri.ExecRequest or cri.PortForwardRequest
    expires: float


def check_exec_request(request: cri.ExecRequest) -> None:
    """containerd's checks of an Exec before it hands out a URL."""
    if not request.cmd:
        raise InvalidArgument("exec needs a command")
    if not (request.stdin or request.stdout or request.stderr):
        raise InvalidArgument("one of stdin, stdout, or stderr must be set")
    if request.tty and request.stderr:
        raise InvalidArgument("tty and stderr cannot both be true")


class StreamingServer:
    def __init__(self, executor: Executor, host: str = "127.0.0.1", port: int = 0) -> None:
        self._executor = executor
        self._host = host
        self._port = port
        self._pending: dict[str, _Pending] = {}
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        log.info("streaming server on http://%s:%d", self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def exec_url(self, request: cri.ExecRequest) -> str:
        """A single-use URL for ``request`` (already checked by the caller)."""
        return self._url("exec", request)

    def port_forward_url(self, request: cri.PortForwardRequest) -> str:
        return self._url("portforward", request)

    def attach_url(self, request: cri.AttachRequest) -> str:
        return self._url("attach", request)

    def _url(self, kind: str, request: Any) -> str:
        now = time.monotonic()
        for token in [t for t, p in self._pending.items() if p.expires < now]:
            del self._pending[token]
        if len(self._pending) >= MAX_TOKENS:
            raise FailedPrecondition("too many exec requests in flight; try again")
        token = secrets.token_urlsafe(8)
        copied = type(request)()
        copied.CopyFrom(request)
        self._pending[token] = _Pending(kind, copied, now + TOKEN_TTL)
        return f"http://{self._host}:{self._port}/{kind}/{token}"

    # -- HTTP ------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ProtocolError) as e:
            log.debug("streaming connection ended: %s", e)
        except Exception:
            log.exception("streaming connection failed")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return await _respond(writer, 431, "request head too large")
        if len(head) > MAX_REQUEST_HEAD:
            return await _respond(writer, 431, "request head too large")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or parts[0] not in ("GET", "POST"):
            return await _respond(writer, 400, "bad request line")
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers.setdefault(name.strip().lower(), []).append(value.strip())
        kind, _, token = parts[1].strip("/").partition("/")
        pending = self._pending.get(token)
        if pending is None or pending.kind != kind or pending.expires < time.monotonic():
            return await _respond(writer, 404, "unknown or used token")
        del self._pending[token]
        upgrade = ",".join(headers.get("upgrade", [])).lower()
        if "spdy/3.1" not in upgrade:
            return await _respond(writer, 400, "this server upgrades to SPDY/3.1 only")
        offered = [
            p.strip() for v in headers.get("x-stream-protocol-version", []) for p in v.split(",")
        ]
        protocol = PORT_FORWARD_PROTOCOL if kind == "portforward" else PROTOCOL
        if protocol not in offered:
            return await _respond(writer, 403, f"protocol {protocol} not offered")
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
            b"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: " + protocol.encode() + b"\r\n\r\n"
        )
        await writer.drain()
        session = Session(reader, writer)
        reading = asyncio.create_task(session.run())
        try:
            if kind == "exec":
                await self._exec(session, pending.request)
            elif kind == "attach":
                await self._attach(session, pending.request)
            else:
                await self._port_forward(session, pending.request)
        finally:
            await session.go_away()
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading

    # -- the remote command ------------------------------------------------------------

    async def _exec(self, session: Session, request: cri.ExecRequest) -> None:
        streams = await _collect_streams(session, request)
        if streams is None:
            return  # the client never opened them all; it gets nothing
        loop = asyncio.get_running_loop()
        stdin = _QueueReader() if "stdin" in streams else None
        stdout = _StreamWriter(streams["stdout"], loop) if "stdout" in streams else None
        stderr = _StreamWriter(streams["stderr"], loop) if "stderr" in streams else None
        status: dict[str, Any]
        try:
            running = await asyncio.to_thread(
                self._executor.start_exec, request, stdin, stdout, stderr
            )
        except BerthError as e:
            status = {"status": "Failure", "message": str(e), "reason": "InternalError"}
            await _finish(streams, status)
            return
        pumps = []
        if stdin is not None:
            pumps.append(asyncio.create_task(_pump_stdin(streams["stdin"], stdin)))
        if "resize" in streams:
            pumps.append(asyncio.create_task(_pump_resizes(streams["resize"], running)))
        finishing = asyncio.create_task(asyncio.to_thread(running.finish))
        gone = asyncio.create_task(_session_over(session))
        try:
            await asyncio.wait({finishing, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not finishing.done():
                # The client went away (kubectl interrupted): the command goes too, as
                # containerd ends an exec whose stream is gone.
                await asyncio.to_thread(running.kill)
            code = await finishing
        finally:
            gone.cancel()
            if stdin is not None:
                stdin.end()
            for pump in pumps:
                pump.cancel()
        if code == 0:
            status = {"status": "Success"}
        else:
            status = {
                "status": "Failure",
                "message": f"command terminated with non-zero exit code: exit status {code}",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
            }
        await _finish(streams, status)

    # -- attach ----------------------------------------------------------------------

    async def _attach(self, session: Session, request: cri.AttachRequest) -> None:
        """The container's own output, followed in its CRI log from now on, and its
        stdin (a FIFO the shim reads), until the container or the client is done."""
        streams = await _collect_streams(session, request)
        if streams is None:
            return
        try:
            target = await asyncio.to_thread(self._executor.attach_target, request)
        except BerthError as e:
            await _finish(streams, {"status": "Failure", "message": str(e),
                                    "reason": "InternalError"})  # fmt: skip
            return
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_follow_log(target.log_path, streams, request.tty, stop))]
        if "stdin" in streams and target.stdin is not None:
            tasks.append(asyncio.create_task(_feed_fifo(streams["stdin"], target.stdin)))
        if "resize" in streams:
            tasks.append(asyncio.create_task(_pump_resizes(streams["resize"], target)))
        try:
            while not session.closed and await asyncio.to_thread(target.running):
                await asyncio.sleep(0.5)
        finally:
            stop.set()
            await tasks[0]  # the last of the output, up to the exit
            for task in tasks[1:]:
                task.cancel()
        await _finish(streams, {"status": "Success"})

    # -- port forwarding -------------------------------------------------------------

    async def _port_forward(self, session: Session, request: cri.PortForwardRequest) -> None:
        """Serve the client's connections until it goes away: each a pair of streams."""
        pairs: dict[str, dict[str, Stream]] = {}
        forwards: set[asyncio.Task[None]] = set()
        try:
            while (stream := await session.opened.get()) is not None:
                request_id = stream.headers.get("requestid", "")
                pair = pairs.setdefault(request_id, {})
                pair[stream.headers.get("streamtype", "")] = stream
                if {"error", "data"} <= pair.keys():
                    del pairs[request_id]
                    task = asyncio.create_task(self._forward(request, pair))
                    forwards.add(task)
                    task.add_done_callback(forwards.discard)
        finally:
            for task in forwards:
                task.cancel()

    async def _forward(self, request: cri.PortForwardRequest, pair: dict[str, Stream]) -> None:
        error, data = pair["error"], pair["data"]
        try:
            port = int(data.headers.get("port", ""))
            if request.port and port not in request.port:
                raise InvalidArgument(f"port {port} was not asked for")
            conn = await asyncio.to_thread(self._executor.dial, request.pod_sandbox_id, port)
        except (ValueError, OSError, BerthError) as e:
            with contextlib.suppress(ConnectionError):
                await error.write(f"error forwarding port: {e}".encode())
                await error.close()
                await data.close()
            return
        reader, writer = await asyncio.open_connection(sock=conn)

        async def to_pod() -> None:
            while chunk := await data.read():
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

        sending = asyncio.create_task(to_pod())
        try:
            while chunk := await reader.read(COPY_CHUNK):
                await data.write(chunk)
        except ConnectionError:
            pass
        finally:
            sending.cancel()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await data.close()
                await error.close()


async def _session_over(session: Session) -> None:
    """Returns once the client has gone (the session's stream queue ends)."""
    while await session.opened.get() is not None:
        pass


async def _collect_streams(session: Session, request: Any) -> dict[str, Stream] | None:
    """The streams a remote command asks for, once the client opened them all (None if it
    does not within the time allowed, or goes away)."""
    wanted = {"error"}
    if request.stdin:
        wanted.add("stdin")
    if request.stdout:
        wanted.add("stdout")
    if request.stderr and not request.tty:
        wanted.add("stderr")
    if request.tty:
        wanted.add("resize")
    streams: dict[str, Stream] = {}
    deadline = time.monotonic() + STREAM_CREATION_TIMEOUT
    while not wanted <= streams.keys():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            stream = await asyncio.wait_for(session.opened.get(), remaining)
        except TimeoutError:
            return None
        if stream is None:
            return None
        kind = stream.headers.get("streamtype", "")
        if kind in wanted:
            streams[kind] = stream
    return streams


async def _follow_log(
    path: str, streams: dict[str, Stream], tty: bool, stop: asyncio.Event
) -> None:
    """Copy the records written to a CRI log from now on to the client's streams
    (following the file through rotation) until ``stop``, then what is left."""
    if not path:
        await stop.wait()
        return
    handle = None
    pending = b""
    try:
        handle = _open_at_end(path)
        while True:
            stopping = stop.is_set()
            chunk = handle.read(65536) if handle is not None else b""
            if chunk:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    await _send_record(line, streams, tty)
                continue
            if stopping:
                return
            handle = _reopened(path, handle)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    except ConnectionError:
        return
    finally:
        if handle is not None:
            handle.close()


def _open_at_end(path: str) -> Any:
    """The log, positioned after what it holds already (None if it is not there yet)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - the follower closes it
    except OSError:
        return None
    handle.seek(0, os.SEEK_END)
    return handle


def _reopened(path: str, handle: Any) -> Any:
    """``handle``, or the file now at ``path`` when the log was rotated."""
    try:
        on_disk = os.stat(path)
    except OSError:
        return handle
    if handle is not None and os.fstat(handle.fileno()).st_ino == on_disk.st_ino:
        return handle
    if handle is not None:
        handle.close()
    try:
        return open(path, "rb")
    except OSError:
        return None


async def _send_record(line: bytes, streams: dict[str, Stream], tty: bool) -> None:
    parts = line.split(b" ", 3)
    if len(parts) < 3:
        return
    stream_name = "stdout" if tty else parts[1].decode(errors="replace")
    text = parts[3] if len(parts) == 4 else b""
    target = streams.get(stream_name)
    if target is not None:
        await target.write(text + (b"\n" if parts[2] == b"F" else b""))


async def _feed_fifo(stream: Stream, fifo: Path) -> None:
    """The client's stdin into the container's stdin FIFO; closing our end at its end."""
    fd = await asyncio.to_thread(os.open, fifo, os.O_WRONLY)
    try:
        while data := await stream.read():
            await asyncio.to_thread(_write_all, fd, data)
    except OSError:
        pass  # the container went away
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def _finish(streams: dict[str, Stream], status: dict[str, Any]) -> None:
    body = {"metadata": {}, **status}
    with contextlib.suppress(ConnectionError):
        await streams["error"].write(json.dumps(body).encode())
        for stream in streams.values():
            await stream.close()


async def _pump_stdin(stream: Stream, stdin: _QueueReader) -> None:
    while data := await stream.read():
        stdin.feed(data)
    stdin.end()


async def _pump_resizes(stream: Stream, running: ExecSession | AttachTarget) -> None:
    decoder, pending = json.JSONDecoder(), ""
    while data := await stream.read():
        pending += data.decode(errors="replace")
        while pending.strip():
            try:
                size, end = decoder.raw_decode(pending.lstrip())
            except ValueError:
                break  # the rest of the object is still on its way
            pending = pending.lstrip()[end:]
            with contextlib.suppress(BerthError):
                width, height = int(size.get("Width", 0)), int(size.get("Height", 0))
                if width and height:
                    await asyncio.to_thread(running.resize, width, height)


class _QueueReader:
    """stdin for the process: what arrives on the SPDY stream, read from a thread."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._ended = False

    def feed(self, data: bytes) -> None:
        self._queue.put(data)

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put(b"")

    def read(self, size: int = -1) -> bytes:
        data = self._queue.get()
        if not data:
            self._queue.put(b"")  # every later read sees the end too
        return data


class _StreamWriter:
    """stdout/stderr of the process, written from a copier thread onto a SPDY stream
    (each write waits for the frame to go out: the client's pace is the process's)."""

    def __init__(self, stream: Stream, loop: asyncio.AbstractEventLoop) -> None:
        self._stream = stream
        self._loop = loop

    def write(self, data: bytes) -> int:
        future = asyncio.run_coroutine_threadsafe(self._stream.write(bytes(data)), self._loop)
        with contextlib.suppress(ConnectionError):
            future.result()
        return len(data)

    def flush(self) -> None:
        pass


async def _respond(writer: asyncio.StreamWriter, code: int, text: str) -> None:
    reason = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 431: "Too Large"}[code]
    body = text.encode() + b"\n"
    writer.write(
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
