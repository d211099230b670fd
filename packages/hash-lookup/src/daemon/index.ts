/**
 * hl-service, the daemon (`@mtc/hash-lookup/daemon`, for its bin, tests and benches):
 * records in etcd (RecordStore, a supervised local etcd), the overlay server, uploads and
 * their tarball checks, blob garbage collection, metrics; `HL_SERVICE`/`main` run it.
 * What other packages use is the root, `@mtc/hash-lookup`: the client surface.
 */
export * from './blob-gc.ts'
export * from './change-feed.ts'
export * from './etcd-client.ts'
export * from './etcd-store.ts'
export * from './etcd-supervisor.ts'
export * from './ingest.ts'
export * from './main.ts'
export * from './metrics.ts'
export * from './server.ts'
export { parseByteSize } from './sizes.ts'
export * from './tarball.ts'
