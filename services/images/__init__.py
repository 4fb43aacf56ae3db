"""The images service: image records, namespaces, leases, the garbage collector, transfer."""
