"""Helpers for the client library's tests: running a container to its end, cleaning up."""

from __future__ import annotations

import contextlib
import io
import subprocess

import berth
from berth import cio, oci
from tests.harness import Suite


def ctr(
    suite: Suite, namespace: str, *args: str, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return suite.ctr(*args, namespace=namespace, check=check, timeout=timeout)


def run(
    client: berth.Client,
    container_id: str,
    image: berth.Image,
    *args: str,
    stdin: bytes | None = None,
    opts: tuple[oci.SpecOpt, ...] = (),
) -> tuple[int, bytes, bytes]:
    """Run ``args`` in a new container to the end; its exit code, stdout and stderr. The
    container is gone afterwards."""
    out, err = io.BytesIO(), io.BytesIO()
    container = client.new_container(
        container_id,
        snapshot=berth.with_new_snapshot(container_id, image),
        spec=berth.with_new_spec(oci.with_image_config(image), oci.with_process_args(*args), *opts),
    )
    try:
        source = io.BytesIO(stdin) if stdin is not None else None
        task = container.new_task(cio.with_streams(source, out, err))
        exited = task.wait()
        task.start()
        status = exited.result(60)
        task.delete()
    finally:
        remove(container)
    return status.code, out.getvalue(), err.getvalue()


def remove(container: berth.Container) -> None:
    """The container and its task, whatever state they are in."""
    with contextlib.suppress(berth.NotFound):
        container.task().delete(force=True)
    with contextlib.suppress(berth.NotFound):
        container.delete()


def clean_namespace(client: berth.Client) -> None:
    for container in client.containers():
        remove(container)
    for image in client.list_images():
        image.delete()
