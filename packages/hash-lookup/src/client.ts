import type { Libp2p, PeerId } from '@libp2p/interface'
import { type BlobSink, requestBlob } from '@mtc/blobs'
import {
  expectReply,
  findReachableProvider,
  openRpc,
  RemoteError,
  RPC_IDLE_TIMEOUT_MS,
} from '@mtc/p2pnode'
import type { Multiaddr } from '@multiformats/multiaddr'
import { HL_LOOKUP_TIMEOUT_MS } from './constants.ts'
import { errorFromCode, isErrorCode, RegistryUnavailableError } from './errors.ts'
import {
  BLOB_GET,
  type GetReply,
  type HistoryReply,
  HL_DELETE,
  HL_GET,
  HL_HISTORY,
  HL_LIST,
  HL_PUT,
  HL_ROLLBACK,
  type ListReply,
  type ListRequest,
  type PutReply,
  type PutRequest,
  type RollbackReply,
} from './protocol.ts'
import type { ServiceRecord } from './records.ts'

export interface Upload {
  size: number
  source: AsyncIterable<Uint8Array>
}

/**
 * Talks to one hl-service over the overlay. Errors come back as the same typed errors
 * the service threw (NotFoundError, ConflictError...).
 */
export class HashLookupClient {
  readonly libp2p: Libp2p
  readonly target: PeerId | Multiaddr
  /** Longest wait for the service's next byte (RPC_IDLE_TIMEOUT_MS by default). */
  private readonly idleTimeoutMs: number

  constructor(
    libp2p: Libp2p,
    target: PeerId | Multiaddr,
    options: { idleTimeoutMs?: number } = {},
  ) {
    this.libp2p = libp2p
    this.target = target
    this.idleTimeoutMs = options.idleTimeoutMs ?? RPC_IDLE_TIMEOUT_MS
  }

  async get(name: string, signal?: AbortSignal): Promise<ServiceRecord> {
    return (await this.call<GetReply>(HL_GET, { name }, signal)).record
  }

  async list(options: ListRequest = {}, signal?: AbortSignal): Promise<ListReply> {
    const { records, next } = await this.call<ListReply>(HL_LIST, options, signal)
    return next != null ? { records, next } : { records }
  }

  async put(
    req: Omit<PutRequest, 'upload'>,
    upload?: Upload,
    signal?: AbortSignal,
  ): Promise<ServiceRecord> {
    const body: PutRequest = upload != null ? { ...req, upload: { size: upload.size } } : req
    return (
      await this.call<PutReply>(HL_PUT, body, signal, async (rpc) => {
        if (upload != null) await rpc.writeChunks(upload.source, signal)
      })
    ).record
  }

  /** The record, then its earlier versions, newest first. */
  async history(name: string, signal?: AbortSignal): Promise<ServiceRecord[]> {
    return (await this.call<HistoryReply>(HL_HISTORY, { name }, signal)).records
  }

  /** Makes version `to` (default: the newest earlier one with another image) current again. */
  async rollback(name: string, to?: number, signal?: AbortSignal): Promise<ServiceRecord> {
    return (await this.call<RollbackReply>(HL_ROLLBACK, { name, to }, signal)).record
  }

  async delete(name: string, expectedVersion?: number, signal?: AbortSignal): Promise<void> {
    await this.call(HL_DELETE, { name, expectedVersion }, signal)
  }

  /** Streams blob `digest` into `sink` chunk by chunk; returns the announced size. */
  async fetchBlob(digest: string, sink: BlobSink, signal?: AbortSignal): Promise<number> {
    return await requestBlob(await this.open(BLOB_GET, signal), digest, sink, signal)
  }

  private async call<T>(
    protocol: string,
    request: unknown,
    signal?: AbortSignal,
    afterRequest?: (rpc: Awaited<ReturnType<typeof openRpc>>) => Promise<void>,
  ): Promise<T> {
    const rpc = await this.open(protocol, signal)
    let sending = false
    try {
      await rpc.writeJson(request, signal)
      if (afterRequest == null) return await this.reply<T>(rpc, signal)
      // The reply may come early (a refused upload): read it while the body is sent. Its
      // idle clock starts once the body is out: a long upload is not a silent service.
      const waiting = new AbortController()
      const replySignal =
        signal != null ? AbortSignal.any([signal, waiting.signal]) : waiting.signal
      const reply = this.reply<T>(rpc, replySignal, { idle: false })
      sending = true
      const sent = afterRequest(rpc).then(() => {
        sending = false
      })
      await Promise.race([sent, reply]).catch(() => undefined)
      const idle = AbortSignal.timeout(this.idleTimeoutMs)
      idle.addEventListener('abort', () => waiting.abort(idle.reason), { once: true })
      return await reply
    } finally {
      // An upload the service refused half-way is cut off, not drained.
      if (sending) rpc.abort(new Error('request answered before its body was sent'))
      else await rpc.close()
    }
  }

  private async open(protocol: string, signal?: AbortSignal) {
    try {
      return await openRpc(this.libp2p, this.target, protocol, {
        signal,
        idleTimeoutMs: this.idleTimeoutMs,
      })
    } catch (err) {
      throw new RegistryUnavailableError(`cannot reach hl-service: ${(err as Error).message}`, {
        cause: err,
      })
    }
  }

  private async reply<T>(
    rpc: Awaited<ReturnType<typeof openRpc>>,
    signal?: AbortSignal,
    options: { idle?: boolean } = {},
  ): Promise<T> {
    try {
      return await expectReply<T>(rpc, signal, options)
    } catch (err) {
      if (err instanceof RemoteError && isErrorCode(err.code))
        throw errorFromCode(err.code, err.message)
      throw err
    }
  }
}

/**
 * An hl-service found through the DHT that answers a dial (provider records can be stale),
 * looked for until HL_LOOKUP_TIMEOUT_MS or `signal`; RegistryUnavailableError when none.
 */
export async function findHashLookup(libp2p: Libp2p, signal?: AbortSignal): Promise<PeerId> {
  const deadline = AbortSignal.timeout(HL_LOOKUP_TIMEOUT_MS)
  const s = signal != null ? AbortSignal.any([signal, deadline]) : deadline
  const peer = await findReachableProvider(libp2p, 'hash-lookup', '', s)
  if (peer == null) throw new RegistryUnavailableError('no reachable hl-service found in the mesh')
  return peer
}
