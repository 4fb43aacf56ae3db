"""The public API is what berth re-exports, and nothing slips in or out unnoticed."""

from __future__ import annotations

import berth
from berth import cio, cni, mount, oci

EXPORTED = [
    "DEFAULT_ADDRESS", "Aborted", "AlreadyExists", "BerthError", "Canceled", "Client",
    "Conflict", "Container", "ContainerOpt", "ContainerRecord", "DataLoss", "DeadlineExceeded",
    "Descriptor", "Event", "ExitStatus", "ExitWaiter", "FailedPrecondition", "Image", "Internal",
    "InvalidArgument", "Lease", "NotFound", "OutOfRange", "PermissionDenied", "Platform",
    "Process", "ProcessInfo", "Progress", "Resource", "ResourceExhausted", "Status",
    "Subscription", "Task", "TaskInfo", "Unauthenticated", "Unavailable", "Unimplemented", "Unreachable",
    "__version__",
    "cio", "cni", "mount", "namespace", "oci", "runc_options", "with_container_extension", "with_container_labels",
    "with_image", "with_image_config_labels", "with_image_stop_signal", "with_new_snapshot",
    "with_new_snapshot_view", "with_new_spec", "with_restore_image", "with_restore_runtime",
    "with_restore_rw", "with_restore_spec", "with_runtime", "with_snapshot", "with_snapshotter",
    "with_spec",
]  # fmt: skip


def test_exported_members() -> None:
    assert berth.__all__ == EXPORTED
    for name in berth.__all__:
        assert getattr(berth, name) is not None


def test_every_public_callable_says_what_it_does() -> None:
    for module in (berth, cio, cni, mount, oci):
        for name in getattr(module, "__all__", dir(module)):
            value = getattr(module, name)
            if name.startswith("_") or not callable(value) or isinstance(value, type(berth)):
                continue
            if getattr(value, "__module__", "").startswith("berth"):
                doc = value.__doc__ or ""
                assert doc.strip() or name.startswith("with_"), f"{module.__name__}.{name}"


def test_errors_are_the_shared_hierarchy() -> None:
    assert issubclass(berth.NotFound, berth.BerthError)
    assert issubclass(berth.Conflict, berth.FailedPrecondition)
