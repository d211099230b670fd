import type { Connection, Libp2p, Logger, Stream } from '@libp2p/interface'
import { encodeVarint, RpcStream, wireErrorCode } from '@mtc/p2pnode'
import {
  MAX_NAMES_PER_NOTICE,
  MAX_WATCH_STREAMS_PER_CONNECTION,
  MAX_WATCHERS,
  WATCH_HEARTBEAT_MS,
} from '../constants.ts'
import { RegistryUnavailableError } from '../errors.ts'
import { HL_WATCH, type WatchNotice } from '../protocol.ts'

export interface ChangeFeedComponents {
  libp2p: Libp2p
  log: Logger
}

export interface ChangeFeedInit {
  maxWatchers?: number
  heartbeatMs?: number
}

/** Writes remembered so that the etcd watch's echo of this hl-service's own write is not
 * notified twice. */
const RECENT_WRITES = 1_024

/**
 * Serves HL_WATCH: tells every subscribed proxy and allocator which records changed, so
 * their caches (RecordCache) stay exact without asking again. Notices are written at once
 * and are a few bytes; a subscriber whose stream cannot take them (a stalled peer) is cut
 * off — it reconnects and starts from a clean cache.
 */
export class ChangeFeed {
  private readonly c: ChangeFeedComponents
  private readonly maxWatchers: number
  private readonly heartbeatMs: number
  /** Each subscriber's stream, with its peer for the log. */
  private readonly watchers = new Map<Stream, string>()
  private readonly recent = new Set<string>()
  private heartbeat?: NodeJS.Timeout

  constructor(components: ChangeFeedComponents, init: ChangeFeedInit = {}) {
    this.c = components
    this.maxWatchers = init.maxWatchers ?? MAX_WATCHERS
    this.heartbeatMs = init.heartbeatMs ?? WATCH_HEARTBEAT_MS
  }

  /** Subscribers now. */
  get size(): number {
    return this.watchers.size
  }

  async start(): Promise<void> {
    await this.c.libp2p.handle(HL_WATCH, (stream, conn) => this.accept(stream, conn), {
      maxInboundStreams: MAX_WATCH_STREAMS_PER_CONNECTION,
    })
    this.heartbeat = setInterval(() => this.send({}), this.heartbeatMs)
    this.heartbeat.unref()
  }

  async stop(): Promise<void> {
    clearInterval(this.heartbeat)
    await this.c.libp2p.unhandle(HL_WATCH)
    for (const s of this.watchers.keys()) s.abort(new Error('hl-service is stopping'))
    this.watchers.clear()
  }

  /**
   * Notifies a write by this hl-service, before its writer gets the reply: whoever the
   * writer tells next finds the change already notified. `revision` is the write's, so the
   * etcd watch's echo of it is not notified again.
   */
  published(name: string, revision: number): void {
    this.remember(`${name}@${revision}`)
    this.send({ changed: [name] })
  }

  /** Changes seen by the etcd watch (every hl-service's writes, and etcdctl's). */
  changed(changes: Array<{ name: string; revision: number }>): void {
    const names = new Set<string>()
    for (const { name, revision } of changes) {
      if (!this.recent.has(`${name}@${revision}`)) names.add(name)
    }
    if (names.size === 0) return
    this.send(names.size > MAX_NAMES_PER_NOTICE ? { reset: true } : { changed: [...names] })
  }

  /** Changes may have been missed: every subscriber forgets what it cached. */
  reset(): void {
    this.send({ reset: true })
  }

  private remember(key: string): void {
    this.recent.add(key)
    if (this.recent.size > RECENT_WRITES) {
      const oldest = this.recent.values().next().value
      if (oldest != null) this.recent.delete(oldest)
    }
  }

  private async accept(stream: Stream, conn: Connection): Promise<void> {
    const rpc = new RpcStream(stream)
    try {
      await rpc.readJson()
      if (this.watchers.size >= this.maxWatchers) {
        throw new RegistryUnavailableError(`${this.watchers.size} subscribers already`)
      }
      // Nothing more is expected from the subscriber: whatever it sends ends the stream,
      // so no one can make this side buffer bytes it never reads.
      stream.addEventListener('message', () => stream.abort(new Error('unexpected data')))
      stream.addEventListener('close', () => this.watchers.delete(stream))
      // The answer and the subscription in one step: no notice can come between them.
      stream.send(frame({ ok: true }))
      this.watchers.set(stream, conn.remotePeer.toString())
    } catch (err) {
      this.watchers.delete(stream)
      const message = (err as Error).message
      await rpc.writeJson({ ok: false, code: wireErrorCode(err), message }).catch(() => {})
      await rpc.close()
    }
  }

  private send(notice: WatchNotice): void {
    if (this.watchers.size === 0) return
    const bytes = frame(notice)
    for (const [stream, peer] of this.watchers) {
      // The previous notice is still queued: this subscriber does not read.
      if (stream.writableNeedsDrain) {
        this.watchers.delete(stream)
        this.c.log('dropping change subscriber %s: it does not read', peer)
        stream.abort(new Error('change notices not read'))
        continue
      }
      try {
        stream.send(bytes)
      } catch {
        this.watchers.delete(stream)
      }
    }
  }
}

/** One length-prefixed JSON message, as RpcStream frames it, ready for a synchronous send. */
function frame(message: unknown): Uint8Array {
  const payload = new TextEncoder().encode(JSON.stringify(message))
  const prefix = encodeVarint(payload.byteLength)
  const out = new Uint8Array(prefix.byteLength + payload.byteLength)
  out.set(prefix)
  out.set(payload, prefix.byteLength)
  return out
}
