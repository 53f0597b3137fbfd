#!/bin/sh
# The image's entrypoint: CLOUDBURST_IP unset or "auto" becomes this container's own
# address (the first one its hostname resolves to), then the role's command replaces
# this shell (it is PID 1 and gets SIGTERM itself), its logs (stderr) on stdout.
set -e
if [ -z "${CLOUDBURST_IP:-}" ] || [ "$CLOUDBURST_IP" = "auto" ]; then
  CLOUDBURST_IP="$(python -c 'import socket; print(socket.gethostbyname(socket.gethostname()))')"
  export CLOUDBURST_IP
fi
exec "$@" 2>&1
