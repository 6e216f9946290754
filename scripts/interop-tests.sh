#!/usr/bin/env bash
# Runs the Python interop client's tests (Tests/interop) against `rpcbench serve`, once per
# transport, each with a server of its own that is stopped afterwards:
#   1. plain TCP: every test file — test_interop.py against this server, the client's own
#      unit tests, and test_hostile.py and test_tls.py, which start servers of their own
#      from SWIFTRPC_BIN;
#   2. TLS with client certificates (--tls-cert/--tls-key/--tls-client-ca, throw-away
#      certificates from scripts/make-test-certs.sh): test_interop.py again;
#   3. a Unix socket (--unix): test_interop.py again.
# A transport whose flag `rpcbench serve --help` does not list is skipped, saying so (so
# this passes before rpcbench has it); a server that has the flag but does not start fails.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --product rpcbench >/dev/null
bin=$(swift build --show-bin-path)/rpcbench
# Only what this script sets reaches the tests.
unset SWIFTRPC_ADDR SWIFTRPC_TARGET SWIFTRPC_TLS_CA SWIFTRPC_TLS_CERT SWIFTRPC_TLS_KEY SWIFTRPC_TLS_SERVER_NAME
work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then
    kill $pid 2>/dev/null || true # it may have died already
    wait $pid 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

help=$("$bin" serve --help 2>&1) || { echo "interop: rpcbench serve --help failed:"; echo "$help"; exit 1; }
# has_flag FLAG: whether `rpcbench serve --help` lists FLAG (not merely a longer one).
has_flag() { grep -Eq -- "(^|[^[:alnum:]-])$1([^[:alnum:]-]|\$)" <<<"$help"; }

# start NAME ARGS...: starts `rpcbench serve ARGS` and sets $pid, $log and $addr (what
# follows "listening on "); fails if the server does not get that far within 10 s.
start() {
  name=$1
  shift
  log=$work/$name.log
  "$bin" serve "$@" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    grep -q "^listening on " "$log" && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
  done
  addr=$(sed -n 's/^listening on //p' "$log" | head -n 1)
  if [ -z "$addr" ]; then
    echo "interop ($name): the server did not start: $bin serve $*"
    cat "$log"
    exit 1
  fi
}

# stop: fails if the server died during the tests, else stops it.
stop() {
  if ! kill -0 $pid 2>/dev/null; then
    echo "interop ($name): the server died during the tests:"
    cat "$log"
    exit 1
  fi
  kill $pid
  wait $pid 2>/dev/null || true
  pid=
}

tls=yes
has_flag --tls-cert || tls=
unix=yes
has_flag --unix || unix=

echo "interop: plain TCP"
start tcp --port 0 --loops 2
skip_tls=()
[ -n "$tls" ] || skip_tls=(--ignore=Tests/interop/test_tls.py) # its skips would hide the count
SWIFTRPC_TARGET=$addr SWIFTRPC_BIN=$bin python3 -m pytest -q Tests/interop "${skip_tls[@]}"
stop

if [ -n "$tls" ]; then
  echo "interop: TLS with client certificates"
  ./scripts/make-test-certs.sh "$work/certs"
  c=$work/certs
  start tls --port 0 --loops 2 --tls-cert "$c/server.pem" --tls-key "$c/server.key" --tls-client-ca "$c/ca.pem"
  SWIFTRPC_TARGET=$addr SWIFTRPC_TLS_CA=$c/ca.pem SWIFTRPC_TLS_CERT=$c/client.pem SWIFTRPC_TLS_KEY=$c/client.key \
    python3 -m pytest -q Tests/interop/test_interop.py
  grep "^crpc: TLS data path" "$log" || echo "interop (tls): the server printed no 'crpc: TLS data path' line"
  stop
else
  echo "interop: TLS skipped: \`rpcbench serve --help\` lists no --tls-cert (test_tls.py too)"
fi

if [ -n "$unix" ]; then
  echo "interop: Unix socket"
  start unix --unix "$work/rpc.sock" --loops 2
  case $addr in
    unix:*) ;;
    *) echo "interop (unix): expected \"listening on unix:PATH\", got \"listening on $addr\""; exit 1 ;;
  esac
  SWIFTRPC_TARGET=$addr python3 -m pytest -q Tests/interop/test_interop.py
  stop
else
  echo "interop: Unix socket skipped: \`rpcbench serve --help\` lists no --unix"
fi
