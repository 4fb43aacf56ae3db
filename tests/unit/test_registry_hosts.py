"""Registry host configuration, read as containerd 1.7.24 reads certs.d/<host>/hosts.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import InvalidArgument
from shared.registry import ALL_CAPABILITIES, Capability, RegistryHost, host_dir, registry_hosts
from shared.registry.hosts import is_localhost
from shared.registry.transport import endpoint_url

PULL_RESOLVE = Capability.PULL | Capability.RESOLVE


def write(root: Path, host_dir_name: str, text: str) -> Path:
    d = root / host_dir_name
    d.mkdir(parents=True, exist_ok=True)
    (d / "hosts.toml").write_text(text)
    return d


# -- defaults (no configuration) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "plain_http", "expected"),
    [
        ("docker.io", False, RegistryHost("https", "registry-1.docker.io")),
        ("docker.io", True, RegistryHost("https", "registry-1.docker.io")),
        ("quay.io", False, RegistryHost("https", "quay.io")),
        ("quay.io", True, RegistryHost("http", "quay.io")),
        ("10.0.0.1:5000", False, RegistryHost("https", "10.0.0.1:5000")),
        ("myregistry:5000", True, RegistryHost("http", "myregistry:5000")),
        # Loopback: the port decides (containerd 1.7.24 ConfigureHosts).
        ("localhost", False, RegistryHost("https", "localhost", skip_verify=True)),
        ("localhost:443", False, RegistryHost("https", "localhost:443", skip_verify=True)),
        ("127.0.0.1:80", False, RegistryHost("http", "127.0.0.1:80")),
        ("127.0.0.1:5000", False,
         RegistryHost("https", "127.0.0.1:5000", skip_verify=True, http_fallback=True)),
        ("127.0.0.2:5000", False,
         RegistryHost("https", "127.0.0.2:5000", skip_verify=True, http_fallback=True)),
        ("[::1]:5000", False,
         RegistryHost("https", "[::1]:5000", skip_verify=True, http_fallback=True)),
        ("localhost:5000", True, RegistryHost("http", "localhost:5000")),
        ("localhost", True, RegistryHost("http", "localhost")),
    ],
)  # fmt: skip
def test_defaults(host: str, plain_http: bool, expected: RegistryHost) -> None:
    assert registry_hosts(host, plain_http=plain_http) == [expected]
    assert expected.capabilities == ALL_CAPABILITIES and expected.path == "/v2"


def test_defaults_when_the_root_has_no_directory_for_the_host(tmp_path: Path) -> None:
    write(tmp_path, "other.io", 'server = "https://elsewhere.io"')
    assert registry_hosts("quay.io", tmp_path) == [RegistryHost("https", "quay.io")]
    assert host_dir(tmp_path, "quay.io") is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [("localhost", True), ("localhost:5000", True), ("127.0.0.1", True), ("127.1.2.3:80", True),
     ("[::1]:5000", True), ("::1", True), ("[::1]", True), ("10.0.0.1", False),
     ("localhost.example", False), ("example.com:5000", False)],
)  # fmt: skip
def test_is_localhost(host: str, expected: bool) -> None:
    assert is_localhost(host) is expected


# -- lookup order ------------------------------------------------------------------------


def test_lookup_order(tmp_path: Path) -> None:
    for name in ("reg.io_5000_", "reg.io:5000", "_default"):
        write(tmp_path, name, f'server = "https://{name.strip("_:")[:6]}.example"')
    assert host_dir(tmp_path, "reg.io:5000") == tmp_path / "reg.io_5000_"
    assert registry_hosts("reg.io:5000", tmp_path)[0].host == "reg.io.example"
    (tmp_path / "reg.io_5000_" / "hosts.toml").unlink()
    (tmp_path / "reg.io_5000_").rmdir()
    assert host_dir(tmp_path, "reg.io:5000") == tmp_path / "reg.io:5000"
    (tmp_path / "reg.io:5000" / "hosts.toml").unlink()
    (tmp_path / "reg.io:5000").rmdir()
    assert host_dir(tmp_path, "reg.io:5000") == tmp_path / "_default"
    assert [h.host for h in registry_hosts("reg.io:5000", tmp_path)] == ["defaul.example"]
    # Without a port only the plain name and _default are tried.
    write(tmp_path, "plain.io", 'server = "https://plain.example"')
    assert host_dir(tmp_path, "plain.io") == tmp_path / "plain.io"


def test_default_dir_without_server_means_the_host_itself(tmp_path: Path) -> None:
    write(tmp_path, "_default", '[host."https://mirror.example"]\ncapabilities = ["pull"]\n')
    assert registry_hosts("quay.io", tmp_path) == [
        RegistryHost("https", "mirror.example", capabilities=Capability.PULL),
        RegistryHost("https", "quay.io"),
    ]
    assert registry_hosts("docker.io", tmp_path)[-1] == RegistryHost(
        "https", "registry-1.docker.io"
    )


# -- hosts.toml --------------------------------------------------------------------------


def test_every_field(tmp_path: Path) -> None:
    d = write(
        tmp_path,
        "docker.io",
        """
server = "https://registry-1.docker.io"
capabilities = ["pull", "resolve", "push"]
ca = "root.crt"
client = [["client.cert", "client.key"], "/abs/both.pem"]
skip_verify = false

[header]
  x-server = "s"

[host."https://zzz-first.example:8443"]
  capabilities = ["PULL", "Resolve"]
  ca = ["a.crt", "/etc/ssl/b.crt"]
  client = "single.pem"
  skip_verify = true
  [host."https://zzz-first.example:8443".header]
    x-token = ["t1", "t2"]
    x-one = "v"

[host."http://aaa-second.example/custom/path"]
  capabilities = ["pull"]
  override_path = true

[host."third.example/prefix"]
""",
    )
    hosts = registry_hosts("docker.io", tmp_path)
    assert hosts == [
        RegistryHost(
            "https", "zzz-first.example:8443", "/v2", PULL_RESOLVE,
            ca_files=(d / "a.crt", Path("/etc/ssl/b.crt")),
            client_certs=((d / "single.pem", None),),
            skip_verify=True,
            headers=(("x-token", "t1"), ("x-token", "t2"), ("x-one", "v")),
        ),
        RegistryHost("http", "aaa-second.example", "/custom/path", Capability.PULL),
        RegistryHost("https", "third.example", "/prefix/v2"),
        RegistryHost(
            "https", "registry-1.docker.io", "/v2", ALL_CAPABILITIES,
            ca_files=(d / "root.crt",),
            client_certs=((d / "client.cert", d / "client.key"), (Path("/abs/both.pem"), None)),
            headers=(("x-server", "s"),),
        ),
    ]  # fmt: skip
    assert hosts[0].url == "https://zzz-first.example:8443/v2"


@pytest.mark.parametrize(
    ("server", "override", "expected"),
    [
        ("https://r.example", False, ("https", "r.example", "/v2")),
        ("r.example:5000", False, ("https", "r.example:5000", "/v2")),
        ("http://r.example/", False, ("http", "r.example", "/v2")),
        ("https://r.example/v2", False, ("https", "r.example", "/v2")),
        ("https://r.example/a/../v2/", False, ("https", "r.example", "/v2")),
        ("https://r.example/custom", False, ("https", "r.example", "/custom/v2")),
        ("https://r.example/custom", True, ("https", "r.example", "/custom")),
        ("https://r.example", True, ("https", "r.example", "")),
    ],
)
def test_server_url(tmp_path: Path, server: str, override: bool, expected: tuple[str, ...]) -> None:
    write(tmp_path, "h.io", f'server = "{server}"\noverride_path = {str(override).lower()}\n')
    (host,) = registry_hosts("h.io", tmp_path)
    assert (host.scheme, host.host, host.path) == expected


def test_capabilities_of_the_server_are_reset_when_it_is_defaulted(tmp_path: Path) -> None:
    """containerd fills in a missing server with all capabilities, whatever the file says."""
    write(tmp_path, "h.io", 'capabilities = ["pull"]\nskip_verify = true\n')
    assert registry_hosts("h.io", tmp_path) == [RegistryHost("https", "h.io", skip_verify=True)]


def test_http_with_tls_settings_tries_https_first(tmp_path: Path) -> None:
    write(
        tmp_path,
        "h.io",
        """
server = "http://h.io:80"
skip_verify = true
[host."http://m1.example:5000"]
  ca = "ca.crt"
[host."http://m2.example:5000"]
[host."http://m3.example"]
  skip_verify = true
""",
    )
    hosts = registry_hosts("h.io", tmp_path)
    assert [(h.scheme, h.host, h.http_fallback) for h in hosts] == [
        ("https", "m1.example:5000", True),  # TLS configured, ambiguous port
        ("http", "m2.example:5000", False),  # no TLS settings: plain http as written
        ("http", "m3.example", False),  # no port: not ambiguous
        ("http", "h.io:80", False),  # port 80: not ambiguous
    ]


def test_localhost_with_a_hosts_file_server_keeps_its_scheme(tmp_path: Path) -> None:
    write(tmp_path, "127.0.0.1_5000_", 'server = "http://127.0.0.1:5000"')
    assert registry_hosts("127.0.0.1:5000", tmp_path) == [RegistryHost("http", "127.0.0.1:5000")]


def test_localhost_hosts_file_without_server_gets_the_localhost_default(tmp_path: Path) -> None:
    write(tmp_path, "localhost_5000_", '[host."https://mirror.example"]\n')
    assert registry_hosts("localhost:5000", tmp_path)[-1] == RegistryHost(
        "https", "localhost:5000", skip_verify=True, http_fallback=True
    )


def test_docker_cert_files_without_hosts_toml(tmp_path: Path) -> None:
    d = tmp_path / "reg.example:5000"
    (d / "sub.crt").mkdir(parents=True)  # directories are skipped
    for name in ("ca.crt", "other.crt", "client.cert", "client.key", "lone.cert", "notes.txt"):
        (d / name).write_text("x")
    assert registry_hosts("reg.example:5000", tmp_path) == [
        RegistryHost(
            "https", "reg.example:5000",
            ca_files=(d / "ca.crt", d / "other.crt"),
            client_certs=((d / "client.cert", d / "client.key"), (d / "lone.cert", None)),
        )
    ]  # fmt: skip


def test_empty_hosts_toml_falls_back_to_cert_files(tmp_path: Path) -> None:
    d = write(tmp_path, "127.0.0.1:5000", "")
    (d / "ca.crt").write_text("x")
    # TLS settings on an ambiguous localhost port: https first, then http.
    assert registry_hosts("127.0.0.1:5000", tmp_path) == [
        RegistryHost("https", "127.0.0.1:5000", ca_files=(d / "ca.crt",), skip_verify=True,
                     http_fallback=True)
    ]  # fmt: skip


def test_the_files_are_read_afresh_each_time(tmp_path: Path) -> None:
    write(tmp_path, "h.io", 'server = "https://one.example"')
    assert registry_hosts("h.io", tmp_path)[0].host == "one.example"
    write(tmp_path, "h.io", 'server = "https://two.example"')
    assert registry_hosts("h.io", tmp_path)[0].host == "two.example"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server = ", "invalid TOML"),
        ('capabilities = ["pull", "delete"]', "unknown capability 'delete'"),
        ('capabilities = "pull"', "capabilities must be a list of strings"),
        ('[host."https://m"]\ncapabilities = ["fetch"]', "unknown capability 'fetch'"),
        ("capabilites = []", "unknown keys ['capabilites']"),
        ('[host."https://m"]\nmirror = true', "unknown keys ['mirror']"),
        ('[host."https://m".host."https://n"]', "mirrors cannot nest"),
        ("ca = 3", "ca must be a string or a list of strings"),
        ('ca = ["a", 1]', "ca must be"),
        ('client = [["a", "b", "c"]]', "want a file or a [cert, key] pair"),
        ("client = 3", "client must be a string or a list"),
        ("[header]\nx = 1", "header 'x' must be"),
        ("header = 3", "header must be a dict"),
        ("server = 3", '"server" must be a string'),
        ('server = "ftp://x"', "invalid server 'ftp://x'"),
        ('server = "https://"', "invalid server"),
        ('skip_verify = "yes"', "skip_verify must be a bool"),
        ("override_path = 1", "override_path must be a bool"),
        ('host = "x"', '"host" must be a table'),
        ('[host]\n"https://m" = 1', "must be a table"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path, "h.io", text)
    with pytest.raises(InvalidArgument) as e:
        registry_hosts("h.io", tmp_path)
    assert message in str(e.value)
    assert str(tmp_path / "h.io" / "hosts.toml") in str(e.value)


def test_host_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "h.io").write_text("not a directory")
    with pytest.raises(InvalidArgument, match="must be a directory"):
        registry_hosts("h.io", tmp_path)


# -- request URLs ------------------------------------------------------------------------


def test_mirrors_get_the_namespace_parameter() -> None:
    mirror = RegistryHost("https", "mirror.example", "/v2")
    upstream = RegistryHost("https", "registry-1.docker.io", "/v2")
    own = RegistryHost("http", "127.0.0.1:5000", "/v2")
    assert (
        endpoint_url(mirror, "library/alpine", "manifests", "latest", namespace="docker.io")
        == "https://mirror.example/v2/library/alpine/manifests/latest?ns=docker.io"
    )
    assert (
        endpoint_url(upstream, "library/alpine", "manifests", "latest", namespace="docker.io")
        == "https://registry-1.docker.io/v2/library/alpine/manifests/latest"
    )
    assert (
        endpoint_url(own, "a/b", "blobs", "uploads/", query=[("mount", "sha256:x"), ("from", "c")],
                     namespace="127.0.0.1:5000")
        == "http://127.0.0.1:5000/v2/a/b/blobs/uploads/?mount=sha256%3Ax&from=c"
    )  # fmt: skip
    custom = RegistryHost("https", "m.example", "")
    assert (
        endpoint_url(custom, "a", "blobs", "sha256:1", namespace="quay.io")
        == "https://m.example/a/blobs/sha256:1?ns=quay.io"
    )
