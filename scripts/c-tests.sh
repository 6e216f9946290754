#!/usr/bin/env bash
# Builds and runs the C-level tests of CRPCCore (Tests/c/test_*.c), each a small program
# compiled with AddressSanitizer and UndefinedBehaviorSanitizer against the core's
# sources. Exit 0 passes, 77 skips (e.g. a forced io_uring refused here), anything else
# fails.
#
#   scripts/c-tests.sh                    the backend the core picks (io_uring where allowed)
#   scripts/c-tests.sh --backend epoll    every test on epoll (same as SWIFTRPC_BACKEND=epoll)
#   scripts/c-tests.sh --backend uring    every test on io_uring (no fallback)
#   scripts/c-tests.sh --backend both     the suite once per backend: io_uring, then epoll
#   scripts/c-tests.sh test_loopback ...  only the named tests
set -uo pipefail
cd "$(dirname "$0")/.."
backends=("${SWIFTRPC_BACKEND:-}")
tests=()
while [ $# -gt 0 ]; do
  case $1 in
    --backend) backends=("$2"); shift 2 ;;
    --backend=*) backends=("${1#--backend=}"); shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) tests+=("Tests/c/$(basename "$1" .c).c"); shift ;;
  esac
done
[ "${backends[0]}" = both ] && backends=(uring epoll)
[ ${#tests[@]} -eq 0 ] && tests=(Tests/c/test_*.c)

out=.build/ctests
mkdir -p "$out"
CC=${CC:-gcc}
# CRPC_DEBUG: the loop-confinement checks of debug builds (core.h) run in every test.
CFLAGS="-std=gnu11 -g -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -Wall -Wextra -Werror -DCRPC_DEBUG"
built=() build_fail=0
for src in "${tests[@]}"; do
  name=$(basename "$src" .c)
  if $CC $CFLAGS -Iinclude -ISources/CRPCCore -ISources/CMsgPack Sources/CRPCCore/*.c "$src" \
      -luring -lmsgpackc -lssl -lcrypto -lpthread -o "$out/$name"; then
    built+=("$name")
  else
    echo "FAIL $name (does not build)"; build_fail=$((build_fail + 1))
  fi
done

status=0
for backend in "${backends[@]}"; do
  pass=0 fail=$build_fail skip=0
  label=${backend:-default}
  for name in "${built[@]}"; do
    if [ -n "$backend" ]; then
      SWIFTRPC_BACKEND=$backend timeout 300 "$out/$name"
    else
      (unset SWIFTRPC_BACKEND; timeout 300 "$out/$name")
    fi
    rc=$?
    case $rc in
      0) pass=$((pass + 1)) ;;
      77) skip=$((skip + 1)); echo "SKIP $name ($label)" ;;
      *) fail=$((fail + 1)); echo "FAIL $name ($label, exit $rc)" ;;
    esac
  done
  echo "c-tests: $pass passed, $fail failed, $skip skipped (backend: $label)"
  [ "$fail" -eq 0 ] || status=1
done
exit $status
