#!/usr/bin/env bash
# The load runs of benches/load: builds in release mode, starts what they need (the
# mcp-connector binary, the node peer of bench/peer.mjs, an MCP server and the Kubernetes
# API double in the driver), and prints one Markdown table. Everything is on 127.0.0.1.
#
#   bench/run.sh                         every run, about two minutes
#   bench/run.sh --only token,mcp        some: token, mcp, streams, cluster, run
#   bench/run.sh --micro                 also the micro benchmarks (cargo bench --bench micro)
#
# The builds run under nice, so that a shared machine stays usable.
set -euo pipefail
cd "$(dirname "$0")/.."

micro=false
args=()
for arg in "$@"; do
    case "$arg" in
        --micro) micro=true ;;
        *) args+=("$arg") ;;
    esac
done

# 10,000 streams through /mcp are 20,000 sockets in the operator: as many open files as
# this shell may have.
ulimit -n "$(ulimit -Hn)"

if [ ! -d tests/js/node_modules/oidc-provider ]; then
    npm ci --prefix tests/js --no-audit --no-fund
fi

# Builds the driver and the mcp-connector binary it starts, in the bench (release) profile.
nice -n 10 cargo bench --bench load --no-run
if "$micro"; then
    nice -n 10 cargo bench --bench micro --no-run
    cargo bench --bench micro
fi
cargo bench --bench load -- "${args[@]}"
