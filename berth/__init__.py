"""berth: containerd, rebuilt in Python as a suite of gRPC services.

This package is the public Python API (``shared`` and ``services`` are internal)::

    import berth
    from berth import cio, mount, oci

    with berth.Client() as client:
        image = client.pull("docker.io/library/busybox:latest")
        container = client.new_container(
            "hello",
            snapshot=berth.with_new_snapshot("hello", image),
            spec=berth.with_new_spec(oci.with_image_config(image),
                                     oci.with_process_args("echo", "hello")),
        )
        task = container.new_task(cio.stdio())
        exited = task.wait()
        task.start()
        print(exited.result().code)
        task.delete()
        container.delete()

See docs/client.md for the guide.
"""

from berth import cio, cni, mount, oci
from berth._rpc import Unreachable, namespace
from berth.checkpoint import (
    with_restore_image,
    with_restore_runtime,
    with_restore_rw,
    with_restore_spec,
)
from berth.client import DEFAULT_ADDRESS, Client
from berth.container import (
    Container,
    ContainerOpt,
    ContainerRecord,
    runc_options,
    with_container_extension,
    with_container_labels,
    with_image,
    with_image_config_labels,
    with_image_stop_signal,
    with_new_snapshot,
    with_new_snapshot_view,
    with_new_spec,
    with_runtime,
    with_snapshot,
    with_snapshotter,
    with_spec,
)
from berth.distribution import Progress
from berth.events import Event, Subscription
from berth.image import Image
from berth.leases import Lease, Resource
from berth.task import (
    ExitStatus,
    ExitWaiter,
    Process,
    ProcessInfo,
    Status,
    Task,
    TaskInfo,
)
from shared.diff import Descriptor
from shared.errors import (
    Aborted,
    AlreadyExists,
    BerthError,
    Canceled,
    Conflict,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from shared.oci import Platform
from shared.version import BERTH_VERSION as __version__

__all__ = [
    "DEFAULT_ADDRESS",
    "Aborted",
    "AlreadyExists",
    "BerthError",
    "Canceled",
    "Client",
    "Conflict",
    "Container",
    "ContainerOpt",
    "ContainerRecord",
    "DataLoss",
    "DeadlineExceeded",
    "Descriptor",
    "Event",
    "ExitStatus",
    "ExitWaiter",
    "FailedPrecondition",
    "Image",
    "Internal",
    "InvalidArgument",
    "Lease",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "Platform",
    "Process",
    "ProcessInfo",
    "Progress",
    "Resource",
    "ResourceExhausted",
    "Status",
    "Subscription",
    "Task",
    "TaskInfo",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unreachable",
    "__version__",
    "cio",
    "cni",
    "mount",
    "namespace",
    "oci",
    "runc_options",
    "with_container_extension",
    "with_container_labels",
    "with_image",
    "with_image_config_labels",
    "with_image_stop_signal",
    "with_new_snapshot",
    "with_new_snapshot_view",
    "with_new_spec",
    "with_restore_image",
    "with_restore_runtime",
    "with_restore_rw",
    "with_restore_spec",
    "with_runtime",
    "with_snapshot",
    "with_snapshotter",
    "with_spec",
]
