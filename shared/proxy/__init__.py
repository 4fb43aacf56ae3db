"""The core contracts implemented over gRPC: what services and clients use to reach a peer."""
