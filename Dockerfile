# sockplay in a container: the server on port 12345 of every interface of
# the container, as an unprivileged user.
#
#   docker build -t sockplay .
#   docker run --rm -p 127.0.0.1:12345:12345 sockplay
#   python -m sockplay.client            # from the host
#
# Server options go after the image name, replacing the command:
#   docker run --rm -p 12345:12345 sockplay \
#       twistd -n --pidfile= sockplay --listen tcp:12345 --framing line --keep-open
# (the health check sends one raw message: with another framing, replace
# it with --health-cmd, or turn it off with --no-healthcheck).
#
# `docker stop` sends SIGTERM: the server stops accepting and drains its
# connections for up to 10 s; give it longer than that (docker stop -t 30).

FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed numeric id, so that Kubernetes' runAsNonRoot can check it.
RUN groupadd --system --gid 10001 sockplay \
    && useradd --system --uid 10001 --gid sockplay --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin sockplay

COPY . /tmp/sockplay
# Installed as root, and Twisted's plugin cache written now: the server's
# user cannot write to site-packages. The base install has TLS (ssl:
# listeners) and every other feature.
RUN pip install /tmp/sockplay \
    && rm -rf /tmp/sockplay \
    && twistd --help >/dev/null

USER 10001:10001

EXPOSE 12345
STOPSIGNAL SIGTERM

# One request, as a client would make it: connect, send, read the reply.
# Healthy only on exit status 0, an echo of the message: 1 (no reply), 3 (an
# error reply, such as "Error: server busy" from a full server) and 4 (a
# reply that is not an echo) all count as failures.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-m", "sockplay.client", "--host", "127.0.0.1", "--port", "12345", "--timeout", "3"]

# --pidfile= : nothing to write; tcp:12345 : every interface of the container
# (the default listener is loopback only, unreachable from outside it).
CMD ["twistd", "-n", "--pidfile=", "sockplay", "--listen", "tcp:12345"]
