# SwiftRPC — the two commands a fresh Debian 12 machine needs:
#   make run    the main job: the default rpcbench suite on loopback (release build)
#   make test   every test: C core tests, swift test, Python interop against a live server
# Both install liburing-dev, libmsgpack-dev and Python's msgpack/pytest first when missing.

.PHONY: deps release run test c-test swift-test interop-test bench docs

deps:
	./scripts/install-deps.sh

release: deps
	swift build -c release

run: release
	.build/release/rpcbench

test: deps
	./scripts/test.sh

# The C tests once per I/O backend (io_uring, then epoll); `make test` uses the one the core
# picks, or SWIFTRPC_BACKEND's.
c-test: deps
	./scripts/c-tests.sh --backend both

swift-test: deps
	swift test

interop-test: deps
	./scripts/interop-tests.sh

# Regenerates docs/BENCHMARKS.md (release builds, several minutes).
bench: release
	./scripts/benchmarks.sh

# The DocC catalogue of SwiftRPC (swift-docc-plugin); the archive lands in
# .build/plugins/Swift-DocC/outputs/SwiftRPC.doccarchive.
docs:
	./scripts/docs.sh
