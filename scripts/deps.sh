#!/usr/bin/env bash
# Installs what deckhand's demo and tests need on a fresh Debian machine, skipping what is
# already there: protoc, etcd (server and etcdctl), busybox-static (for the local test
# image), Debian's docker-registry and htpasswd (private registry tests), a C compiler (the
# fake NVML test library), supervisor and systemd (tests/deploy.rs runs the deploy files
# under a real supervisord and checks the units with systemd-analyze verify), prometheus
# (tests/operations/ scrapes the daemons with a real Prometheus and lints their metrics
# with promtool), chromium (the same tests load the manager's status page in headless
# Chromium), openssh-client (tests/profile_ssh.rs logs into kernels with the real `ssh`) and
# iproute2 (tests/cluster_span.rs puts its own Docker engines in network namespaces).
# Then builds the local test image from busybox-static, since no image can be pulled here,
# and installs moto (PyPI `moto[server]`, the S3-compatible server of the Vast.ai log
# shipping and profile resources/results tests) into a venv outside the repository. Safe to
# run again.
set -euo pipefail

need=()
for pkg in protobuf-compiler libprotobuf-dev etcd-server etcd-client busybox-static docker-registry apache2-utils gcc supervisor systemd prometheus chromium openssh-client iproute2; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
have() { command -v "$1" >/dev/null 2>&1; }

# moto needs a Python 3 with venv; install Debian's only when there is none.
python3 -m venv --help >/dev/null 2>&1 || need+=(python3 python3-venv)
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The local test image: busybox-static imported as a one-layer image.
TEST_IMAGE="${DECKHAND_TEST_IMAGE:-deckhand-test/busybox:latest}"
if have docker && docker info >/dev/null 2>&1; then
  if ! docker image inspect "$TEST_IMAGE" >/dev/null 2>&1; then
    echo "deps: building $TEST_IMAGE from busybox-static" >&2
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/home"
    cp /bin/busybox "$root/bin/busybox"
    for applet in $("$root/bin/busybox" --list); do
      [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nwork:x:1000:1000:work:/home/work:/bin/sh\n' > "$root/etc/passwd"
    printf 'root:x:0:\nwork:x:1000:\n' > "$root/etc/group"
    tar -C "$root" -c . | docker import -c 'CMD ["/bin/sh"]' - "$TEST_IMAGE" >/dev/null
  fi
else
  echo "deps: no Docker engine reachable; kernel tests will need one" >&2
fi

# moto's S3 server (tests/common/s3.rs starts `moto_server` per test). It lives in a venv at
# $DECKHAND_MOTO_VENV (default ~/.cache/deckhand/moto), outside the repository's files, and
# is installed only when that venv lacks this moto version (about a minute, from PyPI);
# delete the folder to force a fresh install.
MOTO_VERSION=5.2.5
MOTO_VENV="${DECKHAND_MOTO_VENV:-$HOME/.cache/deckhand/moto}"
if ! "$MOTO_VENV/bin/python" -c "import sys, moto; sys.exit(moto.__version__ != '$MOTO_VERSION')" >/dev/null 2>&1 \
   || [ ! -x "$MOTO_VENV/bin/moto_server" ]; then
  echo "deps: installing moto[server]==$MOTO_VERSION into $MOTO_VENV" >&2
  rm -rf "$MOTO_VENV"
  mkdir -p "$(dirname "$MOTO_VENV")"
  python3 -m venv "$MOTO_VENV"
  "$MOTO_VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi
