"""Container lifecycle events for kubelet (``GetContainerEvents``) from the suite's bus.

The runtime announces ``/containers/create``, ``/tasks/start``, ``/tasks/exit`` and
``/containers/delete``; in the ``k8s.io`` namespace each is a CRI event of the sandbox
or container it names (an exec's exit is not).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared import typeurl
from shared.api.containerd.events import container_pb2, task_pb2
from shared.api.cri.runtime.v1 import api_pb2 as cri
from shared.errors import NotFound
from shared.events.envelope import Envelope

NAMESPACE = "k8s.io"
TOPICS = {
    "/containers/create": cri.CONTAINER_CREATED_EVENT,
    "/tasks/start": cri.CONTAINER_STARTED_EVENT,
    "/tasks/exit": cri.CONTAINER_STOPPED_EVENT,
    "/containers/delete": cri.CONTAINER_DELETED_EVENT,
}
FILTER = f'namespace=={NAMESPACE},topic~="^/(containers/(create|delete)|tasks/(start|exit))$"'


@dataclass(frozen=True)
class LifecycleEvent:
    container_id: str
    kind: int  # cri.ContainerEventType
    created_at: int  # ns since the epoch


def lifecycle_event(envelope: Envelope) -> LifecycleEvent | None:
    """The CRI event an envelope of the bus stands for, or None."""
    kind = TOPICS.get(envelope.topic)
    if kind is None or envelope.namespace != NAMESPACE:
        return None
    try:
        payload = typeurl.unpack(envelope.event)
    except NotFound:
        return None
    if isinstance(payload, container_pb2.ContainerCreate | container_pb2.ContainerDelete):
        container_id = payload.id
    elif isinstance(payload, task_pb2.TaskStart):
        container_id = payload.container_id
    elif isinstance(payload, task_pb2.TaskExit):
        if payload.id and payload.id != payload.container_id:
            return None  # an exec'd process ended, not the container
        container_id = payload.container_id
    else:
        return None
    created = envelope.timestamp.seconds * 1_000_000_000 + envelope.timestamp.nanos
    return LifecycleEvent(container_id, kind, created)
