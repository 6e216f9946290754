#!/usr/bin/env bash
# The layer rules docs/ARCHITECTURE.md states, checked: only SwiftRPC's Core/ folder and the
# MessagePack coder touch a C module (the coder only msgpack-c's), and no source file grows
# past 700 lines. Prints each breach; exits 1 if there is any.
set -uo pipefail
cd "$(dirname "$0")/.."
bad=0
breach() { echo "check-layers: $*"; bad=1; }
while IFS= read -r f; do
  case "$f" in
    Sources/SwiftRPC/Core/*) ;;
    Sources/SwiftRPCMessagePack/*) grep -qE '^(internal |public |@_implementationOnly )?import CRPCCore' "$f" \
                                     && breach "$f imports CRPCCore (the coder may use msgpack-c only)" ;;
    *) breach "$f imports a C module (only Sources/SwiftRPC/Core and the coder may)" ;;
  esac
done < <(grep -rlE '^(internal |public |@_implementationOnly )?import (CRPCCore|CMsgPack)' Sources --include='*.swift')
while read -r n f; do
  [ "$f" = total ] || [ "$n" -le 700 ] || breach "$f has $n lines (split it by concern: at most 700)"
done < <(find Sources -name '*.swift' -o -name '*.c' -o -name '*.h' | xargs wc -l)
[ $bad = 0 ] && echo "check-layers: 1 passed"
exit $bad
