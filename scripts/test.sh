#!/usr/bin/env bash
# Every test: the C core's test programs (ASan+UBSan), the Swift suite, rpcbench's own
# tests, the Python interop client against a live `rpcbench serve`, the Swift suite again
# under AddressSanitizer and ThreadSanitizer, and a soak of a few million verified calls —
# all of it once per I/O backend (io_uring, then epoll) — and short fuzzing runs.
# Stops at the first failing stage; the last line totals every test that ran.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# stage NAME CMD...: runs CMD, showing and keeping its output.
stage() { echo "== $1"; shift; "$@" 2>&1 | tee -a "$log"; }

# Every stage that does I/O runs once per backend: first as the core picks it (io_uring
# where the kernel allows it), then forced to epoll, the fallback where io_uring is refused.
# SWIFTRPC_TEST_BACKENDS="auto" (or "epoll") runs one pass only.
# Structure first: which folders may import a C module, and file sizes (docs/ARCHITECTURE.md).
stage "Layer rules" ./scripts/check-layers.sh

for backend in ${SWIFTRPC_TEST_BACKENDS:-auto epoll}; do
  if [ "$backend" = auto ]; then unset SWIFTRPC_BACKEND; else export SWIFTRPC_BACKEND=$backend; fi
  on="(backend: $backend)"
  stage "C core tests $on" ./scripts/c-tests.sh
  stage "Swift tests $on" swift test --disable-swift-testing
  stage "rpcbench tests $on" ./scripts/rpcbench-tests.sh
  stage "Python interop tests $on" ./scripts/interop-tests.sh
  stage "Swift tests under AddressSanitizer $on" ./scripts/sanitizers.sh address
  stage "Swift tests under ThreadSanitizer $on" ./scripts/sanitizers.sh thread
  stage "Soak (release build) $on" ./scripts/soak.sh 15
done
unset SWIFTRPC_BACKEND
# Parsing only: no backend involved.
stage "Fuzzing (short; scripts/fuzz.sh SECONDS for longer)" ./scripts/fuzz.sh 15

python3 - "$log" <<'PY'
import re, sys
text = open(sys.argv[1], errors="replace").read()
passed = sum(int(n) for n in re.findall(r"^c-tests: (\d+) passed", text, re.M))
passed += sum(int(n) for n in re.findall(r"^rpcbench-tests: (\d+) passed", text, re.M))
passed += sum(int(n) for n in re.findall(r"^(\d+) passed in [\d.]+s", text, re.M))          # pytest
# XCTest prints its total last, after the per-suite lines: one total per `swift test` run.
passed += sum(int(n) for n in re.findall(r"Test Suite 'All tests' passed.*\n\s+Executed (\d+) tests", text))
passed += len(re.findall(r"^check-layers: 1 passed", text, re.M))
passed += len(re.findall(r"^fuzz: no crash", text, re.M)) + len(re.findall(r"^soak: ", text, re.M))
print(f"all tests: {passed} passed, 0 failed")
PY
