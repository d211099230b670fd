/**
 * What a registry client needs, without the daemon's dependencies (etcd3, gRPC): the
 * proxy and the allocator import `@mtc/hash-lookup/client`.
 */
export { findHashLookup, HashLookupClient, type Upload } from './client.ts'
export * from './errors.ts'
export * from './names.ts'
export * from './protocol.ts'
export {
  RecordCache,
  type RecordCacheInit,
  type RegistryAnswer,
  type RegistryReadResult,
} from './record-cache.ts'
export type { BlobRef, PerfRequirements, ServiceRecord, ServiceRecordInput } from './records.ts'
export * from './scaling.ts'
