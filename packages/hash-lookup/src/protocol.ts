import { PROTOCOL_PREFIX } from '@mtc/p2pnode'
import type { ListPage, PerfRequirements, ServiceRecord } from './records.ts'

/**
 * The registry's overlay protocols, one per operation so that each has its own stream
 * limits and write operations can be authorised on their own. A wire change is a new
 * version. Every exchange is one JSON request and one JSON reply (`{ok:true,...}` or
 * `{ok:false, code, message}`), framed by p2pnode's RpcStream; tarballs follow a put
 * request, and a blob reply, as chunks ended by an empty one.
 */
export const HL_GET = `/${PROTOCOL_PREFIX}/hl/get/1.0.0`
export const HL_LIST = `/${PROTOCOL_PREFIX}/hl/list/1.0.0`
export const HL_PUT = `/${PROTOCOL_PREFIX}/hl/put/1.0.0`
export const HL_DELETE = `/${PROTOCOL_PREFIX}/hl/delete/1.0.0`
/** A record and its earlier versions, newest first. */
export const HL_HISTORY = `/${PROTOCOL_PREFIX}/hl/history/1.0.0`
/** Makes an earlier version current again (a write: authorised like put). */
export const HL_ROLLBACK = `/${PROTOCOL_PREFIX}/hl/rollback/1.0.0`
/**
 * Change notices: the client sends `{}`; hl-service answers `{ok:true}` once subscribed (a
 * write after that is notified), then sends WatchNotices for as long as the stream lives.
 */
export const HL_WATCH = `/${PROTOCOL_PREFIX}/hl/watch/1.0.0`
/** Served by hl-service and by any node that keeps blobs (allocators): the blob layer's. */
export { BLOB_GET, type BlobReply, type BlobRequest } from '@mtc/blobs'

export interface GetRequest {
  name: string
}
export interface GetReply {
  record: ServiceRecord
}

export interface HistoryRequest {
  name: string
}
export interface HistoryReply {
  /** The current record first, then up to RECORD_HISTORY_LENGTH earlier versions. */
  records: ServiceRecord[]
}

export interface RollbackRequest {
  name: string
  /** The version to make current again; default: the newest earlier one with another image. */
  to?: number
}
export interface RollbackReply {
  record: ServiceRecord
}

export interface ListRequest {
  prefix?: string
  limit?: number
  after?: string
}
export type ListReply = ListPage

export interface PutRequest {
  record: {
    name: string
    image: string
    /** Required without an upload; with one it must match the tarball's, if given. */
    imageId?: string
    perf?: PerfRequirements
    healthPath?: string
    healthIntervalMs?: number
    healthThreshold?: number
  }
  expectedVersion?: number
  /** A tarball follows as chunks; its exact size is announced so the cap applies early. */
  upload?: { size: number }
}
export interface PutReply {
  record: ServiceRecord
}

export interface DeleteRequest {
  name: string
  expectedVersion?: number
}
export type DeleteReply = Record<string, never>

export type WatchRequest = Record<string, never>
/**
 * One notice: `changed` names records written or deleted since the last notice; `reset`
 * says changes may have been missed (forget every cached answer); `{}` is a heartbeat.
 * Each write is notified before the writer gets its reply.
 */
export interface WatchNotice {
  changed?: string[]
  reset?: true
}
