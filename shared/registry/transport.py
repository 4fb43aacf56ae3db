"""HTTP to registry endpoints: pooled clients per TLS setting, auth, retries, http fallback.

One :class:`httpx.Client` (and so one connection pool) per endpoint and TLS
configuration, shared by every thread; httpx clients are thread-safe. A
request is retried with exponential backoff on connection errors and on 408,
429 and 5xx answers when it is safe to send again (not for upload steps,
except when the connection was never made); a 401 is answered once through
the :class:`~shared.registry.auth.Authorizer`.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterable, Sequence

import certifi
import httpx

from shared.errors import InvalidArgument
from shared.registry.auth import Authorizer
from shared.registry.hosts import RegistryHost
from shared.registry.status import (
    RETRY_STATUSES,
    cert_error,
    plain_http_answer,
    transport_error,
)

log = logging.getLogger(__name__)

MAX_BACKOFF = 10.0
MAX_RETRY_AFTER = 30.0


def endpoint_url(
    host: RegistryHost,
    repository: str,
    *parts: str,
    query: Sequence[tuple[str, str]] = (),
    namespace: str = "",
) -> str:
    """``<scheme>://<host><path>/<repository>/<parts>`` with ``?ns=<namespace>`` when the
    endpoint is not the namespace's own registry (containerd's addNamespace)."""
    segments = [s.strip("/") for s in (host.path, repository, *parts) if s.strip("/")]
    path = "/" + "/".join(segments) + ("/" if parts and parts[-1].endswith("/") else "")
    params = list(query)
    if namespace and is_mirror(host, namespace):
        params.append(("ns", namespace))
    search = "?" + urllib.parse.urlencode(params) if params else ""
    return f"{host.scheme}://{host.host}{path}{search}"


def is_mirror(host: RegistryHost, namespace: str) -> bool:
    """containerd's isProxy: the endpoint serves another registry's namespace."""
    return namespace != host.host and not (
        namespace == "docker.io" and host.host == "registry-1.docker.io"
    )


def ssl_context(host: RegistryHost) -> ssl.SSLContext:
    """System roots (certifi's if the system has none) plus ``ca``, with ``client`` pairs."""
    context = ssl.create_default_context()
    if not context.cert_store_stats().get("x509_ca"):
        context.load_verify_locations(cafile=certifi.where())
    try:
        for ca in host.ca_files:
            context.load_verify_locations(cafile=str(ca))
        for cert, key in host.client_certs:
            context.load_cert_chain(str(cert), str(key) if key else None)
    except (OSError, ssl.SSLError) as e:
        raise InvalidArgument(f"TLS files for {host.host}: {e}") from e
    if host.skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return min(max(float(value), 0.0), MAX_RETRY_AFTER)
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value).timestamp()
        return min(max(when - time.time(), 0.0), MAX_RETRY_AFTER)
    return None


class Transport:
    def __init__(
        self, *, user_agent: str, timeout: float, max_attempts: int, backoff: float
    ) -> None:
        self.user_agent = user_agent
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self._lock = threading.Lock()
        self._clients: dict[tuple[object, ...], httpx.Client] = {}
        self._plain: set[str] = set()  # endpoints that answered TLS in plain HTTP
        self._closed = False

    def client(self, host: RegistryHost) -> httpx.Client:
        key = (host.scheme, host.host, host.ca_files, host.client_certs, host.skip_verify)
        with self._lock:
            if self._closed:
                raise RuntimeError("registry client is closed")
            found = self._clients.get(key)
        if found is not None:
            return found
        verify: ssl.SSLContext | bool = ssl_context(host) if host.scheme == "https" else True
        created = httpx.Client(
            verify=verify,
            timeout=httpx.Timeout(self.timeout),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )
        with self._lock:
            found = self._clients.setdefault(key, created)
        if found is not created:
            created.close()
        return found

    def backoff_sleep(self, attempt: int, hint: float | None = None) -> None:
        delay = hint if hint is not None else min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF)
        time.sleep(delay)

    def send(
        self,
        host: RegistryHost,
        authorizer: Authorizer,
        method: str,
        url: str,
        *,
        scopes: Iterable[str],
        what: str,
        headers: Sequence[tuple[str, str]] = (),
        content: bytes | None = None,
        stream: bool = False,
        follow_redirects: bool = True,
        attempts: int | None = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        """The answer to one request (any status but a first 401); the caller checks it and,
        with ``stream``, closes it. Transport failures raise Unavailable after the retries."""
        scopes = tuple(scopes)
        attempts = self.max_attempts if attempts is None else max(1, attempts)
        client = self.client(host)
        attempt, answered_challenge = 0, False
        while True:
            attempt += 1
            parts = urllib.parse.urlsplit(url)
            if host.http_fallback and parts.scheme == "https" and parts.netloc in self._plain:
                url = urllib.parse.urlunsplit(parts._replace(scheme="http"))
            netloc = parts.netloc
            request_headers = [("User-Agent", self.user_agent), *host.headers, *headers]
            if (authorization := authorizer.authorization(netloc, scopes, client)) is not None:
                request_headers.append(("Authorization", authorization))
            request = client.build_request(method, url, headers=request_headers, content=content)
            try:
                response = client.send(request, stream=stream, follow_redirects=follow_redirects)
            except httpx.HTTPError as e:
                if host.http_fallback and url.startswith("https:") and plain_http_answer(e):
                    log.info("%s answers in plain HTTP: using http from now on", netloc)
                    with self._lock:
                        self._plain.add(netloc)
                    attempt -= 1
                    continue
                retry = (
                    isinstance(e, httpx.TransportError)
                    and not cert_error(e)
                    and (idempotent or isinstance(e, httpx.ConnectError))
                )
                if not retry or attempt >= attempts:
                    raise transport_error(e, f"{method} {what}", host.host) from e
                log.info("%s %s: %s; retrying (%d/%d)", method, url, e, attempt, attempts)
                self.backoff_sleep(attempt)
                continue
            if response.status_code == 401:
                response.close()
                if answered_challenge:
                    raise authorizer.no_credentials(netloc)
                authorizer.unauthorized(netloc, response, scopes)
                answered_challenge = True
                attempt -= 1
                continue
            if response.status_code in RETRY_STATUSES and idempotent and attempt < attempts:
                response.close()
                log.info(
                    "%s %s: HTTP %d; retrying (%d/%d)",
                    method,
                    url,
                    response.status_code,
                    attempt,
                    attempts,
                )
                self.backoff_sleep(attempt, _retry_after(response))
                continue
            return response

    def close(self) -> None:
        with self._lock:
            self._closed = True
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
