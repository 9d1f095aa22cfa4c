#!/usr/bin/env bash
# bundle_check.sh accepts|refuses BUILD OUT
#   accepts: gather BUILD's GPU binaries into OUT and check them (must pass).
#   refuses: gather, then remove one library at a time that the binaries need (libzmq, which
#            only `stagecraft` links, and libstdc++, which all do) and require the check to
#            fail and name it: the system folders still hold both, so a check that only ran
#            the binaries would pass there and let a broken bundle go to the GPU machine.
set -euo pipefail
mode=$1 build=$2 out=$3
script="$(dirname "$0")/../../scripts/device-check.sh"
bash "${script}" gather "${build}" "${out}"
case "${mode}" in
  accepts)
    bash "${script}" check "${out}"
    ;;
  refuses)
    for lib in libzmq.so.5 libstdc++.so.6; do
      [ -e "${out}/lib/${lib}" ] || { echo "FAIL: the gathered bundle has no ${lib} to remove"; exit 1; }
      rm -rf "${out}.broken"
      cp -r "${out}" "${out}.broken"
      rm "${out}.broken/lib/${lib}"
      if log=$(bash "${script}" check "${out}.broken" 2>&1); then
        echo "${log}"
        echo "FAIL: the check accepted a bundle without ${lib}"
        exit 1
      fi
      if ! grep -q "${lib} comes from .*, outside the bundle" <<<"${log}"; then
        echo "${log}"
        echo "FAIL: the check failed without naming ${lib}"
        exit 1
      fi
      echo "refused without ${lib}: $(grep -c "${lib}" <<<"${log}") report line(s), e.g.: $(grep -m1 "${lib}" <<<"${log}")"
    done
    rm -rf "${out}.broken" "${out}"
    ;;
  *) echo "usage: $0 accepts|refuses BUILD OUT"; exit 2 ;;
esac
