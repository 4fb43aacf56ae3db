"""The runtime service: container records and tasks, one shim per task."""
