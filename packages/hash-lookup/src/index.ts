/**
 * `@mtc/hash-lookup`: what a registry client needs — the client, its record cache, records,
 * names, protocol, errors, limits — without the daemon's dependencies (etcd3, gRPC). The
 * daemon, hl-service, is `@mtc/hash-lookup/daemon` (src/daemon/), reached from its bin;
 * `@mtc/hash-lookup/core` is the part that needs no overlay either.
 */
export * from './client.ts'
export * from './core.ts'
export * from './protocol.ts'
export * from './record-cache.ts'
