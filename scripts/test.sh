#!/usr/bin/env bash
# Every test: the C core's test programs (ASan+UBSan), the Swift suite, short fuzzing runs,
# rpcbench's own tests, the Python interop client against a live `rpcbench serve`, the
# Swift suite again under AddressSanitizer, and a soak of a few million verified calls.
# Stops at the first failing stage.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== C core tests"
./scripts/c-tests.sh
echo "== Swift tests"
swift test
echo "== Fuzzing (short; scripts/fuzz.sh SECONDS for longer)"
./scripts/fuzz.sh 15
echo "== rpcbench tests"
./scripts/rpcbench-tests.sh
echo "== Python interop tests"
./scripts/interop-tests.sh
echo "== Swift tests under AddressSanitizer"
./scripts/sanitizers.sh address
echo "== Soak (release build)"
./scripts/soak.sh 15
