/**
 * `@mtc/hash-lookup`: what a registry client needs — the client, its record cache, records,
 * names, protocol, errors, limits — without the daemon's dependencies (etcd3, gRPC). The
 * daemon, hl-service, is `@mtc/hash-lookup/daemon` (src/daemon/), reached from its bin.
 */
export * from './client.ts'
export * from './constants.ts'
export * from './errors.ts'
export * from './names.ts'
export * from './protocol.ts'
export * from './record-cache.ts'
export * from './records.ts'
