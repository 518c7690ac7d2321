# syntax=docker/dockerfile:1
# mcp-connector on distroless, run as the nonroot user (65532).
#   docker build -t ghcr.io/kloudfuse/mcp-connector:0.1.0 .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# --locked: build exactly the dependency versions of Cargo.lock.
RUN cargo build --release --locked --bin mcp-connector \
    && install -m 0755 target/release/mcp-connector /mcp-connector

# glibc and libgcc, nothing else: no shell, no package manager. The bookworm builder
# matches its glibc.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /mcp-connector /mcp-connector
USER 65532:65532
# OAuth and /mcp; metrics and probes.
EXPOSE 8080 9090
ENTRYPOINT ["/mcp-connector"]
CMD ["run"]
