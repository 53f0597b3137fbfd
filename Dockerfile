# One image for every role; the role is the command:
#   python -m anna.routing --no-storage     KVS routing (clients' entry)
#   python -m anna.local --seed routing     a KVS storage node (its routing + shards)
#   python -m scheduler.server              the scheduler
#   python -m executor.node                 an executor node (cache + workers)
#   python -m cloudburst.autoscale.server   the autoscaler (the wheelhouse has the
#                                           `autoscale` extra: the kubernetes client)
#   python -m cloudburst.health ROLE        probe: exit 0 when ROLE serves here
# Config: the file $CLOUDBURST_CONFIG (default /etc/cloudburst/cloudburst.yml, mount
# your own) plus CLOUDBURST_<SECTION>__<FIELD> environment overrides. CLOUDBURST_IP
# unset or "auto": the container's own address. Build with scripts/build-image.sh
# (it makes the wheelhouse .image-wheels/ and, offline, a Debian base).
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/app \
    CLOUDBURST_CONFIG=/etc/cloudburst/cloudburst.yml

# Dependencies from the host-built wheelhouse only (no network inside the build).
COPY .image-wheels /tmp/wheels
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install -q --no-index --no-cache-dir --disable-pip-version-check \
      --find-links /tmp/wheels -r /tmp/wheels/requirements.txt \
 && rm -rf /tmp/wheels \
 && echo 'cloudburst:x:10001:10001:cloudburst:/app:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'cloudburst:x:10001:' >> /etc/group \
 && mkdir -p /app /data /etc/cloudburst \
 && chown 10001:10001 /data

COPY deploy/docker/cloudburst.yml /etc/cloudburst/cloudburst.yml
COPY deploy/docker/entrypoint.sh /usr/local/bin/cloudburst-entrypoint
COPY lattices /app/lattices
COPY anna /app/anna
COPY cache /app/cache
COPY cloudburst /app/cloudburst
COPY scheduler /app/scheduler
COPY executor /app/executor
# The code runs from /app (PYTHONPATH); a dist-info gives it its version (the
# client/server version check reads the package metadata).
ARG VERSION=0.0.0
RUN python -m compileall -q /app && chmod 755 /usr/local/bin/cloudburst-entrypoint \
 && mkdir -p /app/cloudburst_py-${VERSION}.dist-info \
 && printf 'Metadata-Version: 2.1\nName: cloudburst-py\nVersion: %s\n' "${VERSION}" \
      > /app/cloudburst_py-${VERSION}.dist-info/METADATA

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
ENTRYPOINT ["cloudburst-entrypoint"]
CMD ["python", "-m", "cloudburst.health", "--help"]
