/**
 * hl-service storage layer: service records in etcd, image tarballs on disk.
 * client.ts/server.ts/protocol.ts carry them over the overlay; main.ts is the binary.
 */

export * from './blob-service.ts'
export * from './blob-store.ts'
export * from './change-feed.ts'
export * from './client.ts'
export * from './constants.ts'
export * from './errors.ts'
export * from './etcd-client.ts'
export * from './etcd-store.ts'
export * from './etcd-supervisor.ts'
export * from './ingest.ts'
export * from './main.ts'
export * from './metrics.ts'
export * from './names.ts'
export * from './protocol.ts'
export * from './record-cache.ts'
export * from './records.ts'
export * from './scaling.ts'
export * from './server.ts'
export { parseByteSize } from './sizes.ts'
export * from './tarball.ts'
