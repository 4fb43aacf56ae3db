"""The committed stubs must be exactly what the .proto files generate."""

from __future__ import annotations

import importlib
import subprocess

from shared.api import generate


def test_generated_code_is_fresh() -> None:
    problems = generate.stale_files()
    assert not problems, "stale generated code; run python -m shared.api.generate:\n" + "\n".join(
        problems
    )


def test_generated_code_is_committed() -> None:
    if not (generate.REPO_ROOT / ".git").exists():
        return
    # The install command regenerates; on a clean clone that must change nothing.
    generated = [
        str(p.relative_to(generate.REPO_ROOT)) for p in generate.generated_files(generate.REPO_ROOT)
    ]
    result = subprocess.run(
        ["git", "-C", str(generate.REPO_ROOT), "status", "--porcelain", "--", *generated],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert result.stdout == "", f"generated code differs from the commit:\n{result.stdout}"


def test_every_module_imports_together() -> None:
    for proto in generate.proto_files():
        module = str(proto.relative_to(generate.REPO_ROOT).with_suffix("")).replace("/", ".")
        importlib.import_module(module + "_pb2")
        importlib.import_module(module + "_pb2_grpc")


def test_wire_names_match_containerd() -> None:
    from shared.api.containerd.services.content.v1 import content_pb2
    from shared.api.containerd.types.task import task_pb2
    from shared.api.cri.runtime.v1 import api_pb2

    content = content_pb2.DESCRIPTOR.services_by_name["Content"]
    assert content.full_name == "containerd.services.content.v1.Content"
    write = content.methods_by_name["Write"]
    assert write.client_streaming and write.server_streaming
    assert task_pb2.DESCRIPTOR.package == "containerd.v1.types"
    assert [v.name for v in task_pb2.Status.DESCRIPTOR.values] == [
        "UNKNOWN", "CREATED", "RUNNING", "STOPPED", "PAUSED", "PAUSING",
    ]  # fmt: skip
    assert api_pb2.DESCRIPTOR.services_by_name["RuntimeService"].full_name == (
        "runtime.v1.RuntimeService"
    )
