#!/usr/bin/env bash
# Installs what SwiftRPC needs on a fresh Debian 12 machine, when it is missing:
# liburing-dev, libmsgpack-dev and libssl-dev (the C core), openssl (the TLS tests make
# their certificates with it), pkg-config, etcd-server (the registry the SwiftRPCDiscovery
# tests start on loopback; they skip without it), and Python's msgpack and pytest (the
# interop client and its tests). Safe to run again: it only installs what is absent.
# Needs root (or sudo) for apt-get; says so clearly otherwise.
set -euo pipefail

need_apt=()
for pkg in liburing-dev libmsgpack-dev libssl-dev openssl pkg-config etcd-server; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done

if ((${#need_apt[@]})); then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "install-deps: need root to install: ${need_apt[*]}" >&2
    echo "install-deps: run as root, or: apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
  echo "install-deps: installing ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import msgpack, pytest' 2>/dev/null; then
  echo "install-deps: installing Python msgpack and pytest"
  python3 -m pip install -q msgpack pytest 2>/dev/null || python3 -m pip install -q --break-system-packages msgpack pytest
fi
