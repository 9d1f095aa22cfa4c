#!/usr/bin/env bash
# build_against_install.sh BUILD_DIR EXAMPLE_DIR: installs BUILD_DIR into a temporary
# prefix, configures and builds EXAMPLE_DIR against it alone, runs its program.
set -euo pipefail
build=$1 example=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
test -x "$work/prefix/bin/stagecraft"
test -f "$work/prefix/include/stagecraft/actors/engine.hpp"
test -f "$work/prefix/lib/cmake/Stagecraft/StagecraftConfig.cmake"
cmake -S "$example" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/build" >/dev/null
"$work/build/embed_and_submit"
# The installed binary runs on its own too.
"$work/prefix/bin/stagecraft" --help >/dev/null
