# syntax=docker/dockerfile:1.12
# One image for every Nexusflow service; its command picks the service:
#   docker run IMAGE scheduler | executor | gateway | migrate [--wait [SECONDS]]
# Build: docker build -t nexusflow .   (the CI workflow builds it with a cache; see .github/workflows)
# The services run from JavaScript compiled in the build stage (scripts/build-dist.mjs), never tsx.

ARG NODE_IMAGE=node:24.21.0-trixie-slim

# --- manifests: the lock and every workspace's package.json (npm ci checks the lock against every
# workspace, so all of them come along); the npm ci layers below are reused until one changes ------
FROM scratch AS manifests
COPY package.json package-lock.json ./
COPY gen/package.json gen/
COPY common/package.json common/
COPY services/scheduler/package.json services/scheduler/
COPY services/executor/package.json services/executor/
COPY services/gateway/package.json services/gateway/
COPY cli/package.json cli/
COPY bench/package.json bench/
COPY client/package.json client/
COPY ui/package.json ui/

# --- build: every dependency, then TypeScript -> JavaScript --------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY --from=manifests / ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.base.json tsconfig.dist.json ./
COPY gen/ gen/
COPY common/src/ common/src/
COPY services/scheduler/src/ services/scheduler/src/
COPY services/executor/src/ services/executor/src/
COPY services/gateway/src/ services/gateway/src/
COPY examples/handlers.ts examples/
# The web UI's sources: build-dist.mjs builds them (vite) into /out/ui/dist, served by the gateway.
COPY ui/index.html ui/vite.config.ts ui/tsconfig.json ui/
COPY ui/src/ ui/src/
# The one module of the client the UI bundles (the merge of WatchRun messages without values).
COPY client/src/watched-run.ts client/src/
COPY scripts/build-dist.mjs scripts/
COPY deploy/docker/ deploy/docker/
RUN node scripts/build-dist.mjs --out /out

# --- deps: production dependencies of the services' workspaces only -------------------------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY --from=manifests / ./
# --omit=optional leaves out the embedded PostgreSQL binaries: in a container DATABASE_URL is required.
RUN --mount=type=cache,target=/root/.npm \
    npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund \
      -w gen -w common -w services/scheduler -w services/executor -w services/gateway

# --- runtime ---------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
# tini as PID 1 forwards signals to Node (which drains on SIGTERM itself) and reaps the orphans of
# `shell` tasks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
# HEALTH_PORT: /healthz and /readyz on a port of their own in every service, whatever METRICS_PORT
# says (off included), so probes and the HEALTHCHECK never depend on metrics being on.
# No NODE_OPTIONS: entrypoint.mjs turns on the source maps of Nexusflow's own code (stack traces
# name its TypeScript lines), not those of node_modules; NODE_OPTIONS=--enable-source-maps maps all.
ENV NODE_ENV=production \
    NEXUSFLOW_DATA_DIR=/tmp/nexusflow \
    HEALTH_PORT=8081
WORKDIR /app
COPY --from=deps /app/ /app/
COPY --from=build /out/ /app/
# The node image's unprivileged user, by number so that Kubernetes' runAsNonRoot can verify it.
# Nothing is written under /app: the root filesystem can be read-only (give /tmp a tmpfs).
USER 1000:1000
EXPOSE 50051 8080 8081 9464 9465 9466
# Readiness without metrics: the scheduler's grpc.health.v1 Check, the gateway's /readyz on its own
# port, the executor's /readyz on HEALTH_PORT (deploy/docker/healthcheck.mjs).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["node", "/app/healthcheck.mjs"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "node", "/app/entrypoint.mjs"]
CMD ["scheduler"]
