"""Container networking with CNI plugins, in the shape of containerd's go-cni.

As with containerd, networking is the caller's part: make the task (its process
exists, not yet started), attach its network namespace, start it; detach before
deleting it::

    network = cni.Network.from_conf_dir()        # first config in /etc/cni/net.d
    task = container.new_task(cio.null_io())
    network.setup(f"{client.namespace}-{container.id}", f"/proc/{task.pid}/ns/net")
    task.start()
    ...
    network.remove(f"{client.namespace}-{container.id}")

Results are cached where libcni keeps them (``/var/lib/cni/results``), so a network
set up here can be torn down by containerd's tools and the other way round.
"""

from shared.cni import (
    DEFAULT_CACHE_DIR,
    DEFAULT_CONF_DIR,
    DEFAULT_IFNAME,
    DEFAULT_PLUGIN_DIRS,
    Attachment,
    CniError,
    Network,
    NetworkConfig,
    detach_everywhere,
    load_default_network,
)

__all__ = [
    "DEFAULT_CACHE_DIR",
    "DEFAULT_CONF_DIR",
    "DEFAULT_IFNAME",
    "DEFAULT_PLUGIN_DIRS",
    "Attachment",
    "CniError",
    "Network",
    "NetworkConfig",
    "detach_everywhere",
    "load_default_network",
]
