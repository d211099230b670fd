import { PROTOCOL_PREFIX } from '@mtc/p2pnode'

/**
 * Fetch a blob by digest: the client sends a BlobRequest, the server answers
 * `{ok:true, size}` (a BlobReply) or `{ok:false, code, message}`, then the blob as chunks
 * ended by an empty one, framed by p2pnode's RpcStream. Served by hl-service and by any
 * node that keeps blobs (allocators). A wire change is a new version.
 */
export const BLOB_GET = `/${PROTOCOL_PREFIX}/blob/get/1.0.0`

export interface BlobRequest {
  digest: string
}
export interface BlobReply {
  size: number
}
