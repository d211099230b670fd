import type { Connection, Libp2p, Logger } from '@libp2p/interface'
import { type BlobLease, type BlobStore, serveBlobs } from '@mtc/blobs'
import { type Announcer, handleRpc, provide, type RpcStream } from '@mtc/p2pnode'
import { BLOB_ANNOUNCE_TIMEOUT_MS, DEFAULT_MAX_BLOB_BYTES } from '../constants.ts'
import {
  BlobTooLargeError,
  ForbiddenError,
  ImageMismatchError,
  InvalidRecordError,
} from '../errors.ts'
import { assertServiceName } from '../names.ts'
import {
  BLOB_GET,
  type DeleteRequest,
  type GetRequest,
  type HistoryRequest,
  HL_DELETE,
  HL_GET,
  HL_HISTORY,
  HL_LIST,
  HL_PUT,
  HL_ROLLBACK,
  type ListRequest,
  type PutRequest,
  type RollbackRequest,
} from '../protocol.ts'
import { validateRecordInput } from '../records.ts'
import type { BlobCollector } from './blob-gc.ts'
import { ChangeFeed } from './change-feed.ts'
import type { RecordStore } from './etcd-store.ts'
import { ingestImageTarball } from './ingest.ts'
import type { HashLookupMetrics } from './metrics.ts'

export interface HashLookupServerComponents {
  libp2p: Libp2p
  records: RecordStore
  blobs: BlobStore
  announcer: Announcer
  metrics: HashLookupMetrics
  log: Logger
  /** Asked for a sweep after each record write or delete (a replaced tarball becomes garbage). */
  collector?: Pick<BlobCollector, 'request'>
}

export interface HashLookupServerInit {
  /** Peer IDs allowed to add and delete; empty = every peer of the (PSK-protected) mesh. */
  writers?: string[]
  maxBlobSize?: number
}

/** A stand-in image ID to validate a record before its tarball told the real one. */
const PENDING_IMAGE_ID = `sha256:${'0'.repeat(64)}`

/**
 * Serves the registry protocols over the overlay, and change notices (HL_WATCH) fed by its
 * own writes and by an etcd watch of every record.
 */
export class HashLookupServer {
  private readonly c: HashLookupServerComponents
  private readonly writers: Set<string>
  private readonly maxBlobSize: number
  private readonly feed: ChangeFeed
  private watch?: { stop(): Promise<void> }

  constructor(components: HashLookupServerComponents, init: HashLookupServerInit = {}) {
    this.c = components
    this.writers = new Set(init.writers ?? [])
    this.maxBlobSize = init.maxBlobSize ?? DEFAULT_MAX_BLOB_BYTES
    this.feed = new ChangeFeed({ libp2p: components.libp2p, log: components.log })
    components.metrics.setWatcherSource(() => this.feed.size)
  }

  async start(): Promise<void> {
    const { libp2p, metrics } = this.c
    const serve = (
      protocol: string,
      op: string,
      fn: (rpc: RpcStream, conn: Connection) => Promise<void>,
    ) => handleRpc(libp2p, protocol, (rpc, conn) => metrics.observe(op, () => fn(rpc, conn)))
    await serve(HL_GET, 'get', (rpc) => this.get(rpc))
    await serve(HL_LIST, 'list', (rpc) => this.list(rpc))
    await serve(HL_PUT, 'put', (rpc, conn) => this.put(rpc, conn))
    await serve(HL_DELETE, 'delete', (rpc, conn) => this.delete(rpc, conn))
    await serve(HL_HISTORY, 'history', (rpc) => this.history(rpc))
    await serve(HL_ROLLBACK, 'rollback', (rpc, conn) => this.rollback(rpc, conn))
    await this.feed.start()
    this.watch = this.c.records.watch(this.feed)
    await serveBlobs(libp2p, this.c.blobs, {
      observe: (fn) => metrics.observe('blob', fn),
      served: (bytes) => metrics.blobBytesServed.inc(bytes),
    })
    this.c.announcer.add('hash-lookup')
    for (const digest of await this.c.blobs.list()) this.c.announcer.add('blob', digest)
  }

  async stop(): Promise<void> {
    await this.watch?.stop()
    this.watch = undefined
    await this.feed.stop()
    for (const p of [HL_GET, HL_LIST, HL_PUT, HL_DELETE, HL_HISTORY, HL_ROLLBACK, BLOB_GET])
      await this.c.libp2p.unhandle(p)
  }

  private async get(rpc: RpcStream): Promise<void> {
    const req = await rpc.readJson<GetRequest>()
    const record = await this.c.records.get(assertServiceName(req?.name))
    await rpc.writeJson({ ok: true, record })
  }

  private async history(rpc: RpcStream): Promise<void> {
    const req = await rpc.readJson<HistoryRequest>()
    const records = await this.c.records.history(assertServiceName(req?.name))
    await rpc.writeJson({ ok: true, records })
  }

  private async rollback(rpc: RpcStream, conn: Connection): Promise<void> {
    this.authorise(conn, 'roll back')
    const req = await rpc.readJson<RollbackRequest>()
    const name = assertServiceName(req?.name)
    if (req.to !== undefined && typeof req.to !== 'number') {
      throw new InvalidRecordError('rollback: to must be a number')
    }
    const saved = await this.c.records.rollback(name, req.to)
    this.feed.published(saved.name, saved.version)
    this.c.log('rolled %s back to %s (version %d)', saved.name, saved.image, saved.version)
    void this.c.collector?.request()
    await rpc.writeJson({ ok: true, record: saved })
  }

  private async list(rpc: RpcStream): Promise<void> {
    const req = (await rpc.readJson<ListRequest>()) ?? {}
    for (const [k, type] of [
      ['prefix', 'string'],
      ['limit', 'number'],
      ['after', 'string'],
    ] as const) {
      if (req[k] !== undefined && typeof req[k] !== type) {
        throw new InvalidRecordError(`list: ${k} must be a ${type}`)
      }
    }
    const page = await this.c.records.list({
      prefix: req.prefix,
      limit: req.limit,
      after: req.after,
    })
    await rpc.writeJson({ ok: true, ...page })
  }

  private async put(rpc: RpcStream, conn: Connection): Promise<void> {
    // The uploaded blob is not garbage until its record is written (or the put failed).
    const lease = this.c.blobs.lease()
    try {
      await this.putLeased(rpc, conn, lease)
    } finally {
      lease.release()
      void this.c.collector?.request()
    }
  }

  private async putLeased(rpc: RpcStream, conn: Connection, lease: BlobLease): Promise<void> {
    this.authorise(conn, 'add')
    const req = await rpc.readJson<PutRequest>()
    if (req == null || typeof req !== 'object' || req.record == null) {
      throw new InvalidRecordError('put: missing record')
    }
    const { record, upload } = req
    // Everything but the image ID is checked before a byte of the tarball is read.
    validateRecordInput({ ...record, imageId: record.imageId ?? PENDING_IMAGE_ID })
    let fields: ReturnType<typeof validateRecordInput>
    if (upload != null) {
      if (!Number.isSafeInteger(upload.size) || upload.size <= 0) {
        throw new InvalidRecordError('put: upload.size must be a positive integer')
      }
      if (upload.size > this.maxBlobSize) {
        throw new BlobTooLargeError(
          `tarball of ${upload.size} bytes exceeds the ${this.maxBlobSize}-byte limit`,
        )
      }
      const ingested = await ingestImageTarball(this.c.blobs, rpc.readChunks(), {
        reference: record.image,
        maxSize: upload.size,
        declaredSize: upload.size,
        lease,
      })
      const { blob, image } = ingested
      if (blob.size !== upload.size) {
        throw new InvalidRecordError(`upload announced ${upload.size} bytes but sent ${blob.size}`)
      }
      if (record.imageId != null && record.imageId !== image.imageId) {
        throw new ImageMismatchError(`tarball holds image ${image.imageId}, not ${record.imageId}`)
      }
      this.c.metrics.blobBytesStored.inc(blob.size)
      await this.announceBlob(blob.digest)
      fields = validateRecordInput({
        ...record,
        imageId: image.imageId,
        blob: { digest: blob.digest, size: blob.size },
      })
    } else {
      if (record.imageId == null) {
        throw new InvalidRecordError('put: an image without a tarball needs its imageId')
      }
      fields = validateRecordInput(record)
    }
    const saved = await this.c.records.put(fields, { expectedVersion: req.expectedVersion })
    this.feed.published(saved.name, saved.version)
    this.c.log(
      '%s %s -> %s (version %d)',
      upload != null ? 'added with tarball' : 'added',
      saved.name,
      saved.image,
      saved.version,
    )
    await rpc.writeJson({ ok: true, record: saved })
  }

  private async delete(rpc: RpcStream, conn: Connection): Promise<void> {
    this.authorise(conn, 'delete')
    const req = await rpc.readJson<DeleteRequest>()
    const name = assertServiceName(req?.name)
    const revision = await this.c.records.delete(name, { expectedVersion: req.expectedVersion })
    this.feed.published(name, revision)
    this.c.log('deleted %s', name)
    void this.c.collector?.request()
    await rpc.writeJson({ ok: true })
  }

  /** The blob is in the DHT before its record exists (retried in the background if not). */
  private async announceBlob(digest: string): Promise<void> {
    this.c.announcer.add('blob', digest)
    try {
      await provide(this.c.libp2p, 'blob', digest, {
        signal: AbortSignal.timeout(BLOB_ANNOUNCE_TIMEOUT_MS),
      })
    } catch (err) {
      this.c.log(
        'blob %s not announced yet (%s); retrying in the background',
        digest,
        (err as Error).message,
      )
    }
  }

  private authorise(conn: Connection, what: string): void {
    if (this.writers.size === 0) return
    const peer = conn.remotePeer.toString()
    if (!this.writers.has(peer)) throw new ForbiddenError(`peer ${peer} may not ${what} services`)
  }
}
