# Spool's image: `spool serve` by default; the same image runs `spool worker`
# and `spool serve --no-worker` (see deploy/compose.yaml and docs/deploy.md).
# Written without Docker at hand: it has not been built yet (docs/deploy.md).

# Build stage: compilers are here only in case better-sqlite3 has no prebuilt
# binary for the platform and has to compile; the runtime stage has none.
FROM node:20-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
# Dependencies first, without running their scripts (the `prepare` build needs
# src/, not copied yet), so this layer is reused while only src/ changes; then
# the two install scripts Spool needs: better-sqlite3's native addon, esbuild's binary.
RUN npm ci --omit=dev --ignore-scripts \
 && npm rebuild better-sqlite3 esbuild
COPY bin ./bin
COPY scripts ./scripts
COPY src ./src
# The same bundle `npm install` makes (dist/); bin/spool.js runs it because it is newer than src/.
RUN node scripts/build.mjs

FROM node:20-slim
ENV NODE_ENV=production \
    SPOOL_HOST=0.0.0.0 \
    SPOOL_DATA_DIR=/data
WORKDIR /app
COPY --from=build /app /app
# The node image's unprivileged user; /data holds SQLite and blobs when no
# DATABASE_URL and no S3 are configured (mount a volume there).
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
EXPOSE 8080
ENTRYPOINT ["node", "bin/spool.js"]
CMD ["serve"]
