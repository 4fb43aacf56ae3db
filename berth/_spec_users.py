"""Spec options for the image's config and for users: who the process runs as, looked up
in the container's own ``/etc/passwd`` and ``/etc/group`` as containerd does."""

from __future__ import annotations

from collections.abc import Iterable

from berth import _passwd
from berth._spec import (
    DEFAULT_PATH,
    ImageConfigSource,
    Spec,
    SpecContext,
    SpecOpt,
    merge_env,
    process_section,
    user_section,
)
from shared.errors import InvalidArgument, NotFound

# -- the image ---------------------------------------------------------------------


def with_image_config(image: ImageConfigSource, args: Iterable[str] | None = None) -> SpecOpt:
    """Take environment, entrypoint + cmd (or ``args`` instead of cmd), working directory
    and user from the image's config (containerd's ``WithImageConfigArgs``). A user given
    by name is looked up in the image's ``/etc/passwd``; supplementary groups come from
    its ``/etc/group``."""
    override = list(args or [])

    def opt(context: SpecContext, spec: Spec) -> None:
        config = image.config().get("config") or {}
        process = process_section(spec)
        process["env"] = merge_env(config.get("Env") or [DEFAULT_PATH], process.get("env") or [])
        cmd = override or list(config.get("Cmd") or [])
        process["args"] = [*(config.get("Entrypoint") or []), *cmd]
        process["cwd"] = config.get("WorkingDir") or "/"
        user = config.get("User") or ""
        if user:
            with_user(user)(context, spec)
            with_additional_gids(str(user_section(spec)["uid"]))(context, spec)
        else:
            with_additional_gids("root")(context, spec)

    return opt


# -- users -------------------------------------------------------------------------


def _ensure_primary_gid(spec: Spec) -> None:
    # The primary group is always among the additional ones (containerd's fix for
    # GHSA-hmfx-3pcx-653p, so that a process cannot shed its group with setgroups).
    user = user_section(spec)
    gids = list(user.get("additionalGids") or [])
    if user.get("gid", 0) not in gids:
        gids.insert(0, user.get("gid", 0))
    user["additionalGids"] = gids


def _numeric(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def with_uid_gid(uid: int, gid: int) -> SpecOpt:
    """Run as ``uid``:``gid``; supplementary groups start over from the primary one
    (:func:`with_additional_gids` adds the user's)."""

    def opt(context: SpecContext, spec: Spec) -> None:
        user = user_section(spec)
        user["uid"], user["gid"] = uid, gid
        user["additionalGids"] = []
        _ensure_primary_gid(spec)

    return opt


def with_user_id(uid: int) -> SpecOpt:
    """Run as ``uid``, with its group from the image's ``/etc/passwd`` (0 if not listed)."""

    def opt(context: SpecContext, spec: Spec) -> None:
        with context.rootfs(spec) as root:
            try:
                found = _passwd.find_user(root, lambda u: u.uid == uid)
                gid = found.gid
            except NotFound:
                gid = 0
        with_uid_gid(uid, gid)(context, spec)

    return opt


def with_username(name: str) -> SpecOpt:
    """Run as the user called ``name`` in the image's ``/etc/passwd`` (NotFound if absent)."""

    def opt(context: SpecContext, spec: Spec) -> None:
        with context.rootfs(spec) as root:
            try:
                found = _passwd.find_user(root, lambda u: u.name == name)
            except NotFound as e:
                raise NotFound(f"user {name!r}: {e}") from None
        with_uid_gid(found.uid, found.gid)(context, spec)

    return opt


def with_user(user: str) -> SpecOpt:
    """Run as ``user``: ``name``, ``uid``, ``name:group``, ``uid:gid``, ``uid:group`` or
    ``name:gid``, as the OCI image spec's ``User`` field allows."""
    parts = user.split(":")
    if len(parts) > 2 or not all(parts):
        raise InvalidArgument(f"invalid user {user!r}: want user, uid, user:group or uid:gid")

    def opt(context: SpecContext, spec: Spec) -> None:
        if len(parts) == 1:
            uid = _numeric(parts[0])
            (with_user_id(uid) if uid is not None else with_username(parts[0]))(context, spec)
            return
        uid, gid = _numeric(parts[0]), _numeric(parts[1])
        if uid is None or gid is None:
            with context.rootfs(spec) as root:
                if uid is None:
                    try:
                        uid = _passwd.find_user(root, lambda u: u.name == parts[0]).uid
                    except NotFound as e:
                        raise NotFound(f"user {parts[0]!r}: {e}") from None
                if gid is None:
                    try:
                        gid = _passwd.find_group(root, lambda g: g.name == parts[1]).gid
                    except NotFound as e:
                        raise NotFound(f"group {parts[1]!r}: {e}") from None
        with_uid_gid(uid, gid)(context, spec)

    return opt


def with_additional_gids(user: str) -> SpecOpt:
    """Supplementary groups of ``user`` (a name or uid) from the image's ``/etc/group``."""

    def opt(context: SpecContext, spec: Spec) -> None:
        user_section(spec)["additionalGids"] = []
        if not context.has_rootfs(spec):
            # Nothing to read groups from (no snapshot, no absolute root): the primary
            # group alone, where containerd would refuse.
            _ensure_primary_gid(spec)
            return
        with context.rootfs(spec) as root:
            name = user
            uid = _numeric(user)
            try:
                if uid is not None:
                    name = _passwd.find_user(root, lambda u: u.uid == uid).name
                groups = _passwd.groups(root)
            except (NotFound, FileNotFoundError):
                groups = []
        gids = [g.gid for g in groups if g.name != name and name in g.members]
        user_section(spec)["additionalGids"] = gids
        _ensure_primary_gid(spec)

    return opt
