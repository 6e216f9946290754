#!/usr/bin/env bash
# The Swift test suite under AddressSanitizer and ThreadSanitizer (each in its own build
# folder, so the normal build is untouched). The C tests always run under ASan+UBSan
# (scripts/c-tests.sh). `make test` runs both. The thread run uses scripts/tsan.supp: one
# false report from inside the Swift runtime, explained there (docs/RELIABILITY.md).
# Usage: scripts/sanitizers.sh [address|thread ...]
set -euo pipefail
cd "$(dirname "$0")/.."
kinds=("$@")
[ ${#kinds[@]} -gt 0 ] || kinds=(address thread)
for kind in "${kinds[@]}"; do
  echo "== swift test --sanitize=$kind"
  # halt_on_error: a report fails the run even when the test itself would pass.
  ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=0} \
  TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:suppressions=$PWD/scripts/tsan.supp} \
    swift test --disable-swift-testing --sanitize="$kind" --scratch-path ".build-$kind"
done
