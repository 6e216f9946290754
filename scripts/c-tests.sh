#!/usr/bin/env bash
# Builds and runs the C-level tests of CRPCCore (Tests/c/test_*.c), each a small program
# compiled with AddressSanitizer and UndefinedBehaviorSanitizer against the core's
# sources. Exit 0 passes, 77 skips (e.g. io_uring refused here), anything else fails.
set -uo pipefail
cd "$(dirname "$0")/.."
out=.build/ctests
mkdir -p "$out"
CC=${CC:-gcc}
CFLAGS="-std=gnu11 -g -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -Wall -Wextra -Werror"
pass=0 fail=0 skip=0
for src in Tests/c/test_*.c; do
  name=$(basename "$src" .c)
  if ! $CC $CFLAGS -Iinclude -ISources/CRPCCore Sources/CRPCCore/*.c "$src" \
      -luring -lmsgpackc -lpthread -o "$out/$name"; then
    echo "FAIL $name (does not build)"; fail=$((fail + 1)); continue
  fi
  timeout 300 "$out/$name"
  rc=$?
  case $rc in
    0) pass=$((pass + 1)) ;;
    77) skip=$((skip + 1)); echo "SKIP $name" ;;
    *) fail=$((fail + 1)); echo "FAIL $name (exit $rc)" ;;
  esac
done
echo "c-tests: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
