"""Image records in the database (containerd's metadata/images.go)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Row

from shared import content, filters
from shared import context as request_context
from shared.db import Database
from shared.db.schema import images
from shared.diff import Descriptor
from shared.errors import AlreadyExists, InvalidArgument, NotFound
from shared.images import Image


def _image(row: Row) -> Image:  # type: ignore[type-arg]
    return Image(
        name=row.name,
        target=Descriptor(row.media_type, row.digest, row.size, dict(row.annotations or {})),
        labels=dict(row.labels or {}),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def validate_image(image: Image) -> None:
    if not image.name:
        raise InvalidArgument("image name must not be empty")
    if len(image.name) > 1024:
        raise InvalidArgument("image name is longer than 1024 characters")
    if not image.target.media_type:
        raise InvalidArgument(f"image {image.name}: target media type must not be empty")
    content.parse_digest(image.target.digest)
    content.validate_labels(image.labels)


class ImageAdaptor:
    def __init__(self, image: Image) -> None:
        self._image = image

    def field(self, path: Sequence[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        head, rest = path[0], ".".join(path[1:])
        if head == "name" and not rest:
            return self._image.name, bool(self._image.name)
        if head == "target" and rest == "digest":
            return self._image.target.digest, True
        if head == "target" and rest == "mediatype":
            return self._image.target.media_type, True
        if head in ("labels", "annotations") and rest:
            source = self._image.labels if head == "labels" else self._image.target.annotations
            value = source.get(rest)
            return (value, True) if value is not None else ("", False)
        return "", False


def _apply_map_paths(
    current: dict[str, str], wanted: dict[str, str], prefix: str, paths: Sequence[str]
) -> dict[str, str]:
    for path in paths:
        if path == prefix:
            current = dict(wanted)
        elif path.startswith(prefix + "."):
            key = path.removeprefix(prefix + ".")
            if wanted.get(key):
                current[key] = wanted[key]
            else:
                current.pop(key, None)
    return {k: v for k, v in current.items() if v != ""}


class ImageRecords:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, name: str) -> Image:
        namespace = request_context.require_namespace()
        with self.db.read() as conn:
            row = conn.execute(
                select(images).where(images.c.namespace == namespace, images.c.name == name)
            ).one_or_none()
        if row is None:
            raise NotFound(f"image {name!r}: not found")
        return _image(row)

    def list(self, filter_exprs: Sequence[str] = ()) -> list[Image]:
        namespace = request_context.require_namespace()
        match = filters.parse_all(list(filter_exprs))
        with self.db.read() as conn:
            rows = conn.execute(
                select(images).where(images.c.namespace == namespace).order_by(images.c.name)
            ).all()
        return [i for i in map(_image, rows) if match.match(ImageAdaptor(i))]

    def create(self, image: Image) -> Image:
        namespace = request_context.require_namespace()
        validate_image(image)
        now = time.time_ns()
        with self.db.write() as conn:
            exists = conn.execute(
                select(images.c.name).where(
                    images.c.namespace == namespace, images.c.name == image.name
                )
            ).one_or_none()
            if exists is not None:
                raise AlreadyExists(f"image {image.name!r}: already exists")
            conn.execute(
                insert(images).values(
                    namespace=namespace,
                    name=image.name,
                    media_type=image.target.media_type,
                    digest=image.target.digest,
                    size=image.target.size,
                    annotations=dict(image.target.annotations),
                    labels={k: v for k, v in image.labels.items() if v != ""},
                    created_at=now,
                    updated_at=now,
                )
            )
        return self.get(image.name)

    def update(self, image: Image, fieldpaths: Sequence[str] = ()) -> Image:
        namespace = request_context.require_namespace()
        if not image.name:
            raise InvalidArgument("image name must not be empty")
        current = self.get(image.name)
        paths = list(fieldpaths) or ["labels", "annotations", "target"]
        labels = _apply_map_paths(dict(current.labels), dict(image.labels), "labels", paths)
        annotations = dict(current.target.annotations)
        target = current.target
        for path in paths:
            if path == "target":
                target = image.target
                annotations = dict(image.target.annotations)
            elif not (path == "labels" or path.startswith(("labels.", "annotations"))):
                raise InvalidArgument(f"cannot update {path!r} field on image {image.name!r}")
        annotations = _apply_map_paths(
            annotations, dict(image.target.annotations), "annotations", paths
        )
        updated = Image(image.name, Descriptor(target.media_type, target.digest, target.size,
                                               annotations), labels)  # fmt: skip
        validate_image(updated)
        with self.db.write() as conn:
            result = conn.execute(
                update(images)
                .where(images.c.namespace == namespace, images.c.name == image.name)
                .values(
                    media_type=target.media_type,
                    digest=target.digest,
                    size=target.size,
                    annotations=annotations,
                    labels=labels,
                    updated_at=time.time_ns(),
                )
            )
            if not result.rowcount:
                raise NotFound(f"image {image.name!r}: not found")
        return self.get(image.name)

    def delete(self, name: str) -> None:
        namespace = request_context.require_namespace()
        with self.db.write() as conn:
            result = conn.execute(
                delete(images).where(images.c.namespace == namespace, images.c.name == name)
            )
        if not result.rowcount:
            raise NotFound(f"image {name!r}: not found")
