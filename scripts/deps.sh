#!/usr/bin/env bash
# Installs what deckhand's demo and tests need on a fresh Debian machine, skipping what is
# already there: protoc, etcd (server and etcdctl), busybox-static (for the local test
# image), Debian's docker-registry and htpasswd (private registry tests), a C compiler (the
# fake NVML test library), supervisor and systemd (tests/deploy.rs runs the deploy files
# under a real supervisord and checks the units with systemd-analyze verify). Then builds
# the local test image from busybox-static, since no image can be pulled here. Safe to run
# again.
set -euo pipefail

need=()
for pkg in protobuf-compiler libprotobuf-dev etcd-server etcd-client busybox-static docker-registry apache2-utils gcc supervisor systemd; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
have() { command -v "$1" >/dev/null 2>&1; }

if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
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
