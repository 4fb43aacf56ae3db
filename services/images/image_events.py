"""Image records that announce their changes, whoever makes them.

The Images API, server-side pulls and archive imports all create and update
image records; each change goes out as containerd's ``/images/create``,
``/images/update`` or ``/images/delete`` event, as containerd's metadata
store does for its clients, so ``ctr events`` sees a pull through Transfer
the same as one made by ``ctr images pull``.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.images.image_store import ImageRecords
from shared.api.containerd.events import image_pb2 as image_events
from shared.events.outbox import Outbox
from shared.images import Image


class AnnouncedImages:
    """An :class:`~shared.images.ImageStore` over ``records``, with events."""

    def __init__(self, records: ImageRecords, outbox: Outbox) -> None:
        self._records = records
        self._outbox = outbox

    def get(self, name: str) -> Image:
        return self._records.get(name)

    def list(self, filters: Sequence[str] = ()) -> list[Image]:
        return self._records.list(filters)

    def create(self, image: Image) -> Image:
        created = self._records.create(image)
        self._outbox.put(
            "/images/create",
            image_events.ImageCreate(name=created.name, labels=dict(created.labels)),
        )
        return created

    def update(self, image: Image, fieldpaths: Sequence[str] = ()) -> Image:
        updated = self._records.update(image, fieldpaths)
        self._outbox.put(
            "/images/update",
            image_events.ImageUpdate(name=updated.name, labels=dict(updated.labels)),
        )
        return updated

    def delete(self, name: str) -> None:
        self._records.delete(name)
        self._outbox.put("/images/delete", image_events.ImageDelete(name=name))
