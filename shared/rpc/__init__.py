"""gRPC plumbing shared by every berth process: servers, channels, status codes."""
