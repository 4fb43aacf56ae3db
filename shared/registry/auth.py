"""Registry credentials (docker's ``config.json``) and the answers to auth challenges.

A registry first sees an anonymous request; a 401 carries the challenge
(``WWW-Authenticate``), which the :class:`Authorizer` remembers per endpoint so
that later requests are authorized up front:

* ``Bearer realm=..,service=..,scope=..``: a token from the realm, fetched with
  ``GET realm?service=..&scope=repository:<name>:pull[,push]`` (HTTP Basic with
  the credentials if there are any, anonymous otherwise), or with an OAuth
  ``POST`` (``grant_type=refresh_token``) for an identity token, as the docker
  CLI does. Tokens are cached per endpoint and scope set until ``expires_in``.
* ``Basic realm=..``: the credentials themselves.

Credentials are looked up by the host of the endpoint (so a mirror gets its
own, never the upstream's): ``credHelpers[host]``, then ``credsStore``, each
through ``docker-credential-<name> get`` (a missing helper is skipped), then
``auths`` (``auth`` = base64 ``user:pass``, ``username``/``password``,
``identitytoken``, ``registrytoken``). ``docker.io`` is also found under its
historical key ``https://index.docker.io/v1/``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared.errors import InvalidArgument, PermissionDenied, Unauthenticated
from shared.registry.status import error_for, transport_error

log = logging.getLogger(__name__)

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")
HELPER_TIMEOUT = 30.0
DEFAULT_TOKEN_LIFETIME = 60  # seconds, when the token server does not say (docker's minimum)
OAUTH_CLIENT_ID = "berth"


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""  # an OAuth refresh token (docker login's "identitytoken")
    registry_token: str = ""  # a bearer token to send as is

    def __repr__(self) -> str:  # never print secrets
        return f"Credentials(username={self.username!r}, ...)"


CredentialsFunc = Callable[[str], Credentials | None]


def default_docker_config() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    root = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return Path(root) / "config.json"


def _hostname(key: str) -> str:
    """docker's ConvertToHostname: drop the scheme and everything after the first '/'."""
    for prefix in ("http://", "https://"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key.split("/", 1)[0]


def _aliases(host: str) -> tuple[str, ...]:
    return _DOCKER_HUB_HOSTS if host in _DOCKER_HUB_HOSTS else (host,)


class DockerConfig:
    """Credentials from a docker ``config.json``, read afresh at each lookup (it may change)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, host: str) -> Credentials | None:
        return self.credentials(host)

    def _load(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise InvalidArgument(f"docker config {self.path}: unreadable: {e}") from e
        if not isinstance(doc, dict):
            raise InvalidArgument(f"docker config {self.path}: not a JSON object")
        return doc

    def credentials(self, host: str) -> Credentials | None:
        doc = self._load()
        aliases = _aliases(host)
        helpers = doc.get("credHelpers") or {}
        for alias in aliases:
            if isinstance(helpers, dict) and isinstance(helpers.get(alias), str):
                if (found := self._helper(helpers[alias], host)) is not None:
                    return found
                break
        store = doc.get("credsStore")
        if isinstance(store, str) and store and (found := self._helper(store, host)) is not None:
            return found
        auths = doc.get("auths") or {}
        if not isinstance(auths, dict):
            raise InvalidArgument(f"docker config {self.path}: auths must be an object")
        for key, entry in auths.items():
            if not (_hostname(key) in aliases and isinstance(entry, dict)):
                continue
            if (found := self._entry(key, entry)) is not None:
                return found
        return None

    def _entry(self, key: str, entry: Mapping[str, Any]) -> Credentials | None:
        username, password = str(entry.get("username") or ""), str(entry.get("password") or "")
        if entry.get("auth"):
            try:
                decoded = base64.b64decode(str(entry["auth"]), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError) as e:
                raise InvalidArgument(
                    f"docker config {self.path}: auths[{key!r}].auth is not base64: {e}"
                ) from e
            username, sep, password = decoded.partition(":")
            if not sep:
                raise InvalidArgument(
                    f"docker config {self.path}: auths[{key!r}].auth is not user:password"
                )
        found = Credentials(
            username,
            password,
            str(entry.get("identitytoken") or ""),
            str(entry.get("registrytoken") or ""),
        )
        return found if found != Credentials() else None

    def _helper(self, name: str, host: str) -> Credentials | None:
        program = f"docker-credential-{name}"
        server = DOCKER_HUB_KEY if host in _DOCKER_HUB_HOSTS else host
        try:
            result = subprocess.run(
                [program, "get"],
                input=server,
                capture_output=True,
                text=True,
                timeout=HELPER_TIMEOUT,
            )
        except FileNotFoundError:
            log.warning("credential helper %s not found; skipping it for %s", program, host)
            return None
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning("credential helper %s failed for %s: %s", program, host, e)
            return None
        if result.returncode != 0:  # "credentials not found in native keychain" and the like
            log.debug("%s get %s: %s", program, server, result.stdout.strip() or result.stderr)
            return None
        try:
            doc = json.loads(result.stdout)
            username, secret = str(doc.get("Username") or ""), str(doc.get("Secret") or "")
        except (ValueError, AttributeError) as e:
            raise InvalidArgument(f"{program} get {server}: output is not JSON: {e}") from e
        if username == "<token>":
            return Credentials(identity_token=secret)
        return Credentials(username, secret) if username or secret else None


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercase: "bearer", "basic"
    params: Mapping[str, str] = field(default_factory=dict)


_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}))\s*(?:,|\Z)')
_SCHEME = re.compile(rf"\s*,?\s*({_TOKEN})(?:\s+|\Z)")


def parse_challenges(headers: Iterable[str]) -> list[Challenge]:
    """Every challenge of ``WWW-Authenticate`` header values (RFC 7235), in order."""
    challenges = []
    for header in headers:
        pos = 0
        while pos < len(header):
            scheme = _SCHEME.match(header, pos)
            if scheme is None:
                break
            pos, params = scheme.end(), {}
            while (param := _PARAM.match(header, pos)) is not None:
                value = param.group(2)
                value = re.sub(r"\\(.)", r"\1", value) if value is not None else param.group(3)
                params[param.group(1).lower()] = value
                pos = param.end()
            challenges.append(Challenge(scheme.group(1).lower(), params))
    return challenges


def merge_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """``repository:a:pull`` + ``repository:a:push`` -> ``repository:a:pull,push``; sorted."""
    actions: dict[str, set[str]] = {}
    for scope in scopes:
        for one in scope.split():
            resource, sep, acts = one.rpartition(":")
            if not sep or not resource:
                continue
            actions.setdefault(resource, set()).update(a for a in acts.split(",") if a)
    return tuple(f"{r}:{','.join(sorted(a))}" for r, a in sorted(actions.items()))


def basic(credentials: Credentials) -> str:
    raw = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


class Authorizer:
    """Challenges per endpoint and tokens per scope set; safe to share between threads."""

    def __init__(self, credentials: CredentialsFunc | None = None, *, where: str = "") -> None:
        self._credentials = credentials or (lambda host: None)
        self._where = where  # where credentials come from, for error messages
        self._lock = threading.Lock()
        # netloc -> the challenge it answered with, and the header that answers it when it
        # needs no token (Basic, or a static registry token)
        self._challenges: dict[str, tuple[Challenge, str | None]] = {}
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self._fetching: dict[tuple[str, ...], threading.Lock] = {}

    def credentials(self, netloc: str) -> Credentials | None:
        """Asked only when a challenge or a token fetch needs them (a helper is a process)."""
        return self._credentials(netloc)

    def authorization(self, netloc: str, scopes: Iterable[str], client: httpx.Client) -> str | None:
        """The Authorization header for a request to ``netloc``, or None (anonymous)."""
        with self._lock:
            known = self._challenges.get(netloc)
        if known is None:
            return None
        challenge, header = known
        if header is not None:
            return header
        return f"Bearer {self._token(netloc, challenge, scopes, client)}"

    def unauthorized(self, netloc: str, response: httpx.Response, scopes: Iterable[str]) -> None:
        """Learn from a 401; the caller retries once. Raises Unauthenticated when a retry
        cannot succeed (a challenge berth cannot answer, or Basic without credentials)."""
        offered = parse_challenges(response.headers.get_list("www-authenticate"))
        usable = [c for c in offered if c.scheme == "bearer" and c.params.get("realm")]
        usable += [c for c in offered if c.scheme == "basic"]
        if not usable:
            raise Unauthenticated(
                f"{netloc} wants authentication, offering no scheme berth "
                f"knows ({response.headers.get('www-authenticate')!r})"
            )
        challenge, header = usable[0], None
        creds = self.credentials(netloc)
        if challenge.scheme == "basic":
            if not (creds and creds.username):
                raise self.no_credentials(netloc)
            header = basic(creds)
        elif creds and creds.registry_token:
            header = f"Bearer {creds.registry_token}"
        with self._lock:
            self._challenges[netloc] = (challenge, header)
            for key in [k for k in self._tokens if k[0] == netloc]:
                del self._tokens[key]  # refused or for other scopes: fetch afresh

    def no_credentials(self, netloc: str) -> Unauthenticated:
        if self.credentials(netloc) is None:
            where = f" in {self._where}" if self._where else ""
            return Unauthenticated(
                f"{netloc} requires authentication (or the repository does not exist) and "
                f"berth has no credentials for it{where}"
            )
        return Unauthenticated(f"{netloc} refused the credentials berth has for it")

    def _token(
        self, netloc: str, challenge: Challenge, scopes: Iterable[str], client: httpx.Client
    ) -> str:
        wanted = merge_scopes([*scopes, challenge.params.get("scope", "")])
        key = (netloc, challenge.params["realm"], challenge.params.get("service", ""), *wanted)
        with self._lock:
            fetch_lock = self._fetching.setdefault(key, threading.Lock())
        with fetch_lock:  # one fetch per scope set, however many parallel downloads
            with self._lock:
                cached = self._tokens.get(key)
            if cached is not None and cached[1] > time.monotonic():
                return cached[0]
            creds = self.credentials(netloc)
            token, lifetime = self._fetch_token(netloc, challenge, wanted, creds, client)
            expires = time.monotonic() + lifetime - min(5.0, lifetime / 10)
            with self._lock:
                self._tokens[key] = (token, expires)
            return token

    def _fetch_token(
        self,
        netloc: str,
        challenge: Challenge,
        scopes: tuple[str, ...],
        creds: Credentials | None,
        client: httpx.Client,
    ) -> tuple[str, float]:
        realm, service = challenge.params["realm"], challenge.params.get("service", "")
        try:
            if creds and creds.identity_token:
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": creds.identity_token,
                    "client_id": OAUTH_CLIENT_ID,
                    "service": service,
                    "scope": " ".join(scopes),
                }
                response = client.post(realm, data=form, follow_redirects=True)
            else:
                params: list[tuple[str, str | int | float | bool | None]] = []
                params += [("service", service)] if service else []
                params += [("scope", s) for s in scopes]
                auth = (creds.username, creds.password) if creds and creds.username else None
                response = client.get(realm, params=params, auth=auth, follow_redirects=True)
        except httpx.HTTPError as e:
            raise transport_error(e, "token request", _hostname(realm)) from e
        if response.status_code == 401:
            raise self.no_credentials(netloc)
        if response.status_code == 403:
            raise PermissionDenied(f"token server {realm} denied {' '.join(scopes)} for {netloc}")
        if response.status_code != 200:
            raise error_for(response, f"a token for {netloc}", _hostname(realm))
        try:
            doc = response.json()
            token = doc.get("token") or doc.get("access_token")
            lifetime = float(doc.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError) as e:
            raise InvalidArgument(f"token server {realm} answered garbage: {e}") from e
        if not isinstance(token, str) or not token:
            raise InvalidArgument(f"token server {realm} answered without a token")
        return token, max(lifetime, 1.0)
