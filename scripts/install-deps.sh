#!/usr/bin/env bash
# Installs the Debian bookworm packages Stagecraft needs. Idempotent and quiet
# when everything is already there; run as root (or with sudo available).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libcaf-dev libboost-dev libzmq3-dev cppzmq-dev libmsgpack-cxx-dev
  doctest-dev libyaml-cpp-dev libopenblas-dev libpng-dev nlohmann-json3-dev
  python3-torch python3-numpy
  # stagecraft serve / submit: the command line (CLI11), the Python client's tests
  # (python3-zmq, python3-msgpack) and `promtool check metrics` on /metrics (prometheus).
  libcli11-dev python3-zmq python3-msgpack prometheus
  # The two-host test of split pipelines: network namespaces, a veth pair and tbf (ip, tc);
  # python3-yaml for the check of examples/deploy against the pipeline file.
  iproute2 python3-yaml
  # make fuzz: clang and its runtime libraries (libclang_rt.fuzzer, asan, ubsan).
  clang libclang-rt-14-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when they are absent or older than a day.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
  $SUDO apt-get update -q >/dev/null
fi
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
