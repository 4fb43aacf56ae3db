"""Small real HTTP servers to put in front of the test registry (or instead of it).

Each is an ``http.server`` in a thread on 127.0.0.1, used as a context manager that
always shuts the server down and joins its thread. Every request is recorded in
``front.log`` (method, path with query, headers).

* :class:`Forwarder` - passes requests to an upstream registry unchanged (the Host
  header included, so the registry's Location URLs point back at the front);
  ``cut_blobs``/``cut_after`` make it drop the connection in the middle of blob bodies.
* :class:`TokenFront` - a Bearer token service plus a registry front that wants its
  tokens (or HTTP Basic with ``basic=True``); 403 when a token lacks an action.
* :class:`Canned` - answers from a table of canned responses: garbage on purpose.
* :class:`TLSForwarder` - a Forwarder speaking TLS with a given certificate, optionally
  requiring client certificates.
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import socket
import ssl
import subprocess
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length"}


@dataclass
class Request:
    method: str
    path: str  # with the query
    headers: dict[str, str]
    body: bytes = b""

    @property
    def route(self) -> str:
        return urllib.parse.urlsplit(self.path).path

    @property
    def query(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    front: Front

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up (or fails a TLS handshake) is part of these tests


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        self.server.front.wrap(self)
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if isinstance(self.request, ssl.SSLSocket):  # socketserver closes only the raw one
                self.request.close()

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(self.command, self.path, dict(self.headers.items()), body)
        with self.server.front.lock:
            self.server.front.log.append(request)
        self.server.front.respond(self, request)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

    def reply(self, reply: Reply, *, cut_after: int | None = None) -> None:
        self.send_response_only(reply.status)
        for key, value in reply.headers.items():
            if key.lower() not in HOP_HEADERS:
                self.send_header(key, value)
        length = reply.headers.get("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(reply.body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if cut_after is not None and cut_after < len(reply.body):
            self.wfile.write(reply.body[:cut_after])
            self.connection.shutdown(socket.SHUT_WR)  # an orderly end in mid-body
            self.close_connection = True
            return
        self.wfile.write(reply.body)


class Front:
    def __init__(self) -> None:
        self.log: list[Request] = []
        self.lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def requests(self, method: str = "", contains: str = "") -> list[Request]:
        with self.lock:
            return [
                r for r in self.log if (not method or r.method == method) and contains in r.path
            ]

    def wrap(self, handler: _Handler) -> None:
        """Per connection, before HTTP (TLS in TLSForwarder)."""

    def respond(self, handler: _Handler, request: Request) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.front = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
            name=f"{type(self).__name__}-{self.address}",
        )  # fmt: skip
        self._thread.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), f"{self._thread.name} did not stop"


class Forwarder(Front):
    def __init__(self, upstream: str, *, cut_blobs: int = 0, cut_after: int = 0) -> None:
        super().__init__()
        self.upstream = upstream  # "127.0.0.1:PORT"
        self.cut_blobs = cut_blobs  # how many blob GET bodies to cut, -1: all
        self.cut_after = cut_after

    def respond(self, handler: _Handler, request: Request) -> None:
        reply = self.forward(request)
        cut = None
        if request.method == "GET" and "/blobs/sha256:" in request.path and reply.status < 300:
            with self.lock:
                if self.cut_blobs:
                    self.cut_blobs -= 1 if self.cut_blobs > 0 else 0
                    cut = self.cut_after
        handler.reply(reply, cut_after=cut)

    def forward(self, request: Request) -> Reply:
        host, port = self.upstream.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            body = request.body if request.method in ("POST", "PUT", "PATCH") else None
            conn.request(request.method, request.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            return Reply(response.status, data, dict(response.getheaders()))
        finally:
            conn.close()


def _json(status: int, doc: Any, **headers: str) -> Reply:
    return Reply(status, json.dumps(doc).encode(), {"Content-Type": "application/json", **headers})


def registry_error(status: int, code: str, message: str, **headers: str) -> Reply:
    return _json(status, {"errors": [{"code": code, "message": message}]}, **headers)


class TokenFront(Forwarder):
    """Users and what they may do: ``{"alice": ("secret", {"pull", "push"})}``."""

    SERVICE = "berth-test"

    def __init__(
        self,
        upstream: str,
        users: dict[str, tuple[str, set[str]]],
        *,
        identity_tokens: dict[str, str] | None = None,  # refresh token -> user
        basic: bool = False,
        expires_in: int = 300,
        token_key: str = "token",
    ) -> None:
        super().__init__(upstream)
        self.users = users
        self.identity_tokens = identity_tokens or {}
        self.basic = basic
        self.expires_in = expires_in
        self.token_key = token_key
        self.tokens: dict[str, tuple[str, set[str]]] = {}  # token -> (user, granted scopes)

    def token_requests(self) -> list[Request]:
        return self.requests(contains="/token")

    def _user(self, authorization: str) -> str | None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        user, _, password = base64.b64decode(value).decode().partition(":")
        return user if user in self.users and self.users[user][0] == password else None

    def respond(self, handler: _Handler, request: Request) -> None:
        if request.route == "/token":
            handler.reply(self._token(request))
            return
        name, action = _repository_action(request)
        authorization = request.headers.get("Authorization", "")
        if self.basic:
            user = self._user(authorization)
            if user is None:
                handler.reply(registry_error(401, "UNAUTHORIZED", "authentication required",
                                             **{"WWW-Authenticate": 'Basic realm="berth-test"'}))  # fmt: skip
                return
            allowed = action in self.users[user][1]
        else:
            token = authorization.removeprefix("Bearer ")
            user, granted = self.tokens.get(token, (None, set()))
            allowed = f"repository:{name}:{action}" in granted or not name
            if user is None or (not user and not allowed):  # no token, or anonymous: 401
                challenge = (f'Bearer realm="{self.url}/token",service="{self.SERVICE}",'
                             f'scope="repository:{name}:{"pull" if action == "pull" else "pull,push"}"')  # fmt: skip
                if user is not None:
                    challenge += ',error="insufficient_scope"'
                handler.reply(registry_error(401, "UNAUTHORIZED", "authentication required",
                                             **{"WWW-Authenticate": challenge}))  # fmt: skip
                return
        if not allowed:
            handler.reply(registry_error(403, "DENIED", f"requested access to {name} is denied"))
            return
        super().respond(handler, request)

    def _token(self, request: Request) -> Reply:
        if request.method == "POST":
            form = urllib.parse.parse_qs(request.body.decode())
            user = self.identity_tokens.get(form.get("refresh_token", [""])[0])
            scopes = " ".join(form.get("scope", [])).split()
            ok = user is not None and form.get("grant_type") == ["refresh_token"]
        else:
            user = self._user(request.headers.get("Authorization", ""))
            scopes = request.query.get("scope", [])
            ok = user is not None or "Authorization" not in request.headers
        if not ok:
            return _json(401, {"details": "incorrect username or password"})
        rights = self.users[user][1] if user else set()
        granted = set()
        for scope in scopes:
            resource, _, actions = scope.rpartition(":")
            granted |= {f"{resource}:{a}" for a in actions.split(",") if a in rights}
        token = secrets.token_hex(8)
        self.tokens[token] = (user or "", granted)
        return _json(200, {self.token_key: token, "expires_in": self.expires_in})


def _repository_action(request: Request) -> tuple[str, str]:
    """``("testimages/busybox", "pull")`` for /v2/testimages/busybox/manifests/latest."""
    route = request.route.removeprefix("/v2/")
    for marker in ("/manifests/", "/blobs/", "/tags/"):
        if marker in route:
            name = route.split(marker, 1)[0]
            return name, "pull" if request.method in ("GET", "HEAD") else "push"
    return "", "pull"


class Canned(Front):
    """``routes[(method, route)]`` is a Reply or a function of the Request; else 404."""

    def __init__(self) -> None:
        super().__init__()
        self.routes: dict[tuple[str, str], Reply | Callable[[Request], Reply]] = {}

    def respond(self, handler: _Handler, request: Request) -> None:
        found = self.routes.get((request.method, request.route))
        if found is None:
            reply = registry_error(404, "NAME_UNKNOWN", "not here")
        else:
            reply = found(request) if callable(found) else found
        handler.reply(reply)


class TLSForwarder(Forwarder):
    def __init__(self, upstream: str, cert: Path, key: Path, client_ca: Path | None = None):
        super().__init__(upstream)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        if client_ca is not None:
            self.context.verify_mode = ssl.CERT_REQUIRED
            self.context.load_verify_locations(client_ca)

    def wrap(self, handler: _Handler) -> None:
        handler.request = self.context.wrap_socket(handler.request, server_side=True)


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(directory: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, made
    by the openssl command (EC keys: fast)."""
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True,
                       timeout=60)  # fmt: skip

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=berth test CA")  # fmt: skip
    for name, ext in [
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ]:
        (directory / f"{name}.ext").write_text(ext)
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=berth test {name}")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")  # fmt: skip
    return Pki(directory / "ca.crt", directory / "server.crt", directory / "server.key",
                   directory / "client.crt", directory / "client.key")  # fmt: skip
