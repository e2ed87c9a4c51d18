# kubemend worker image. Build stage compiles TypeScript; the runtime stage has production
# dependencies only. `npm run build` compiles and prebundles workflows/ (dist/workflow-bundle.js).
# npm install --no-save, not npm ci: see scripts/setup.sh (the lockfile holds only linux-x64 binaries).
# better-sqlite3 (the embedded audit store) is a native addon: where no prebuilt binary can
# be fetched, node-gyp compiles it, which needs python3, make and g++.
FROM node:20-bookworm-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm install --no-save --no-audit --no-fund
COPY tsconfig.json ./
COPY lib lib
COPY workflows workflows
COPY activities activities
COPY worker worker
COPY cli cli
COPY scripts scripts
COPY test test
RUN npm run build

# Production dependencies, native addon compiled, without the compilers in the final image.
FROM build AS deps
RUN rm -rf node_modules && npm install --no-save --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends openssh-client && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
COPY --from=deps /app/node_modules node_modules
COPY --from=build /app/dist dist
COPY bin bin
USER node
ENTRYPOINT ["node", "bin/kubemend"]
CMD ["worker"]
