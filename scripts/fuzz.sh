#!/usr/bin/env bash
# Builds the libFuzzer targets with -fsanitize=fuzzer,address (Tests/fuzz/fuzz_*.c with clang,
# fuzz_codable.swift with swiftc, compiled with the MessagePack coder's sources) and runs
# each for SECONDS (default 20) from its seed corpus (Tests/fuzz/corpus/NAME).
# New inputs go to .build/fuzz/corpus/NAME (not the repository); a crash leaves its input in
# .build/fuzz/ and fails the script: add it to the seed corpus and a regression test.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]     e.g. scripts/fuzz.sh 3600 envelope
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame envelope codable)
CC=${FUZZ_CC:-clang}
if ! command -v "$CC" >/dev/null; then
  echo "fuzz: SKIP: no clang on PATH (the Swift toolchain's clang builds libFuzzer targets)"; exit 0
fi
out=.build/fuzz
mkdir -p "$out"
core="Sources/CRPCCore/frame.c Sources/CRPCCore/msgpack_check.c Sources/CRPCCore/envelope_decode.c
      Sources/CRPCCore/envelope_encode.c Sources/CRPCCore/buf.c Sources/CRPCCore/errors.c"
for t in "${targets[@]}"; do
  if [ "$t" = codable ]; then
    swiftc -parse-as-library -O -sanitize=fuzzer,address -module-name FuzzCodable -package-name SwiftRPC \
      -Xcc -fmodule-map-file=Sources/CMsgPack/module.modulemap -ISources/CMsgPack \
      Sources/SwiftRPCMessagePack/*.swift Tests/fuzz/fuzz_codable.swift -lmsgpackc -o "$out/fuzz_$t"
  else
    $CC -g -O1 -fsanitize=fuzzer,address,undefined -std=gnu11 -Iinclude -ISources/CRPCCore -ISources/CMsgPack \
      $core "Tests/fuzz/fuzz_$t.c" -lmsgpackc -o "$out/fuzz_$t"
  fi
  mkdir -p "$out/corpus/$t"
  echo "fuzz: $t for ${secs}s"
  (cd "$out" && "./fuzz_$t" -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=256 -max_len=65536 \
    -print_final_stats=1 "corpus/$t" "../../Tests/fuzz/corpus/$t" 2>&1 | tail -4)
done
echo "fuzz: no crash"
