"""The gateway: berth's one client socket (nginx router + this process's own services)."""
