# One image for every berth process; compose and Kubernetes pick the command.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       python3 python3-venv nginx-light ca-certificates \
       runc crun iptables iproute2 containernetworking-plugins btrfs-progs \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/berth
COPY requirements.lock pyproject.toml README.md ./
RUN python3 -m venv /opt/berth/.venv \
    && /opt/berth/.venv/bin/pip install --no-cache-dir -r requirements.lock
COPY berth berth
COPY shared shared
COPY services services
RUN /opt/berth/.venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation -e .
ENV PATH=/opt/berth/.venv/bin:$PATH
ENTRYPOINT ["python", "-m"]
