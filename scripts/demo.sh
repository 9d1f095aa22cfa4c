#!/usr/bin/env bash
# The main job of `make demo`: for now the kernel self-test; it becomes image
# generation with the shipped model once that lands.
set -euo pipefail
BUILD=${1:-build/release}
"$BUILD/cli/stagecraft" selftest
