#!/usr/bin/env bash
# Builds the SwiftRPC DocC catalogue (Sources/SwiftRPC/SwiftRPC.docc) with
# swift-docc-plugin. Output: .build/plugins/Swift-DocC/outputs/SwiftRPC.doccarchive.
# `scripts/docs.sh --warnings-as-errors` fails on broken symbol links.
set -euo pipefail
cd "$(dirname "$0")/.."
swift package --allow-writing-to-package-directory generate-documentation --target SwiftRPC "$@"
