import type { Libp2p, Logger, PeerId } from '@libp2p/interface'
import { Backoff, expectReply, openRpc, PeerLocator, ProtocolViolationError } from '@mtc/p2pnode'
import type { Multiaddr } from '@multiformats/multiaddr'
import { HashLookupClient } from './client.ts'
import {
  HL_LOOKUP_TIMEOUT_MS,
  MAX_NAMES_PER_NOTICE,
  RECORD_CACHE_MAX_ENTRIES,
  RECORD_CACHE_MAX_READS,
  RECORD_CACHE_NEGATIVE_TTL_MS,
  RECORD_CACHE_POSITIVE_TTL_MS,
  RECORD_CACHE_READ_TIMEOUT_MS,
  RECORD_CACHE_RETRY_MS,
  WATCH_BACKOFF,
  WATCH_IDLE_TIMEOUT_MS,
} from './constants.ts'
import { InvalidNameError, NotFoundError, RegistryUnavailableError } from './errors.ts'
import { HL_WATCH, type WatchNotice } from './protocol.ts'
import type { ServiceRecord } from './records.ts'

/** What the registry says of a name: its record, or null for "no such service". */
export type RegistryAnswer = ServiceRecord | null

export type RegistryReadResult = 'found' | 'unknown' | 'unavailable'

export interface RecordCacheInit {
  /** This hl-service (`--hl`); else one found through the DHT, and another once it fails. */
  hl?: Multiaddr
  log?: Logger
  /** Answers kept (the least recently used are dropped), default RECORD_CACHE_MAX_ENTRIES. */
  maxEntries?: number
  /** Reads in flight at once, default RECORD_CACHE_MAX_READS. */
  maxReads?: number
  /** Without change notices, how long "no such service" and a record are trusted. */
  negativeTtlMs?: number
  positiveTtlMs?: number
  /** One read, default RECORD_CACHE_READ_TIMEOUT_MS. */
  readTimeoutMs?: number
  /** Finding an hl-service in the DHT, default HL_LOOKUP_TIMEOUT_MS. */
  lookupTimeoutMs?: number
  /** After a failed read or lookup the registry is not asked for this long. */
  retryMs?: number
  /** Told the result of every read from hl-service (for metrics). */
  onRead?: (result: RegistryReadResult) => void
}

interface Entry {
  /** Bumped by every notice naming the service: an answer read before it is stale. */
  gen: number
  answer?: RegistryAnswer
  /** The `gen` and notice session the answer was read in, and when. */
  answerGen: number
  session: number
  readAt: number
  reading?: Promise<RegistryAnswer>
}

/** Reads waiting for a slot, at most: a gateway has at most 1,024 requests in flight. */
const MAX_QUEUED_READS = 4_096

/**
 * The registry's answers as a proxy or an allocator needs them, per service name: cached,
 * one read per name at a time (shared by every caller), at most `maxReads` reads in flight.
 *
 * Exactness comes from change notices (HL_WATCH): while the stream to hl-service is up,
 * an answer — a record or "no such service" — stays valid until a notice names the
 * service, and hl-service notifies every write before the writer gets its reply, so a
 * registration or deletion takes effect for the next request. Without notices (the
 * stream is down or being re-opened) answers are trusted for a TTL only; every new
 * stream starts a new session, in which nothing read before is trusted.
 */
export class RecordCache {
  private readonly libp2p: Libp2p
  private readonly log: Logger | undefined
  /** `--hl`, or an hl-service found in the DHT and dropped once it fails. */
  private readonly locator: PeerLocator
  private readonly maxEntries: number
  private readonly maxReads: number
  private readonly negativeTtlMs: number
  private readonly positiveTtlMs: number
  private readonly readTimeoutMs: number
  private readonly retryMs: number
  private readonly onRead: (result: RegistryReadResult) => void
  private readonly entries = new Map<string, Entry>()
  private readonly controller = new AbortController()
  /** The client of the hl-service in use (the locator's current peer). */
  private client?: HashLookupClient
  /** When the registry last failed (undefined: it answers). */
  private downAt?: number
  private reads = 0
  private readonly queue: Array<() => void> = []
  /** Counts change-notice streams (and resets): answers of an older session are stale. */
  private session = 0
  private notified = false
  private watching?: Promise<void>
  private wakeWatcher?: () => void

  constructor(libp2p: Libp2p, init: RecordCacheInit = {}) {
    this.libp2p = libp2p
    this.log = init.log
    this.maxEntries = init.maxEntries ?? RECORD_CACHE_MAX_ENTRIES
    this.maxReads = init.maxReads ?? RECORD_CACHE_MAX_READS
    this.negativeTtlMs = init.negativeTtlMs ?? RECORD_CACHE_NEGATIVE_TTL_MS
    this.positiveTtlMs = init.positiveTtlMs ?? RECORD_CACHE_POSITIVE_TTL_MS
    this.readTimeoutMs = init.readTimeoutMs ?? RECORD_CACHE_READ_TIMEOUT_MS
    this.retryMs = init.retryMs ?? RECORD_CACHE_RETRY_MS
    this.onRead = init.onRead ?? (() => {})
    this.locator = new PeerLocator(libp2p, {
      kind: 'hash-lookup',
      fixed: init.hl,
      lookupTimeoutMs: init.lookupTimeoutMs ?? HL_LOOKUP_TIMEOUT_MS,
      // No new lookup while the registry failed lately.
      mayLook: () => this.available && !this.stopped,
      onLookupEnd: (peer) => {
        if (peer != null) {
          this.log?.('reading the registry from hl-service %p', peer)
          this.wakeWatcher?.()
        } else if (!this.stopped) {
          this.markDown('no reachable hl-service found in the mesh')
        }
      },
    })
  }

  /** Finds the registry and subscribes to its change notices (kept up until stop()). */
  start(): void {
    if (this.watching != null || this.stopped) return
    this.watching = this.watch()
    void this.registry()
  }

  async stop(): Promise<void> {
    this.controller.abort()
    this.wakeWatcher?.()
    const reading = [...this.entries.values()].map((e) => e.reading)
    await Promise.allSettled([this.locator.stop(), this.watching, ...reading])
  }

  get stopped(): boolean {
    return this.controller.signal.aborted
  }

  /** Change notices arrive: a valid answer is exact, not just recent. */
  get live(): boolean {
    return this.notified
  }

  /** The registry has not failed lately: a read is worth waiting for. */
  get available(): boolean {
    return this.downAt == null || performance.now() - this.downAt >= this.retryMs
  }

  /**
   * A registry is known, or the first lookup for one may still be under way: a read is
   * worth waiting for. False once a lookup found none (the cache looks again by itself).
   */
  get mayAnswer(): boolean {
    return this.locator.current != null || !this.locator.searched
  }

  /** Answers held now (valid or not). */
  get size(): number {
    return this.entries.size
  }

  /** The peer ID of the hl-service in use (`--hl`'s is learnt by dialling it), looked for
   * now if none is known; undefined when none is found. */
  async registryPeer(signal?: AbortSignal): Promise<PeerId | undefined> {
    return await this.locator.peerId(signal)
  }

  /** The cached answer while valid; undefined when there is none or it may be stale. */
  peek(name: string): RegistryAnswer | undefined {
    const e = this.entries.get(name)
    return e != null && this.valid(e) ? e.answer : undefined
  }

  /** The last answer read, valid or not. */
  last(name: string): RegistryAnswer | undefined {
    return this.entries.get(name)?.answer
  }

  /**
   * The valid cached answer, else the read in flight for `name`, else a new one (the same
   * promise for every caller until it settles). Rejects with RegistryUnavailableError.
   */
  get(name: string): Promise<RegistryAnswer> {
    let e = this.entries.get(name)
    if (e != null) {
      // Most recently used last: the first entry is the one dropped when full.
      this.entries.delete(name)
      this.entries.set(name, e)
      if (this.valid(e)) return Promise.resolve(e.answer ?? null)
    } else {
      e = { gen: 0, answerGen: -1, session: -1, readAt: Number.NEGATIVE_INFINITY }
      if (this.entries.size >= this.maxEntries) {
        const oldest = this.entries.keys().next().value
        if (oldest != null) this.entries.delete(oldest)
      }
      this.entries.set(name, e)
    }
    return e.reading ?? this.read(name, e)
  }

  private valid(e: Entry): boolean {
    if (e.answer === undefined || e.answerGen !== e.gen) return false
    if (this.notified) return e.session === this.session
    const ttl = e.answer === null ? this.negativeTtlMs : this.positiveTtlMs
    return performance.now() - e.readAt < ttl
  }

  private read(name: string, e: Entry): Promise<RegistryAnswer> {
    const gen = e.gen
    const session = this.session
    const reading = this.fetch(name).then((answer) => {
      e.answer = answer
      e.answerGen = gen
      e.session = session
      e.readAt = performance.now()
      return answer
    })
    e.reading = reading
    // Cleared whatever the outcome; callers handle the rejection of `reading` itself.
    reading.then(
      () => {
        if (e.reading === reading) e.reading = undefined
      },
      () => {
        if (e.reading === reading) e.reading = undefined
      },
    )
    return reading
  }

  private async fetch(name: string): Promise<RegistryAnswer> {
    await this.slot()
    try {
      if (!this.available) throw new RegistryUnavailableError('the registry failed lately')
      const client = await this.registry()
      if (client == null) throw new RegistryUnavailableError('no hl-service found in the mesh')
      const signal = AbortSignal.any([
        this.controller.signal,
        AbortSignal.timeout(this.readTimeoutMs),
      ])
      try {
        const record = await client.get(name, signal)
        this.downAt = undefined
        this.onRead('found')
        return record
      } catch (err) {
        if (err instanceof NotFoundError || err instanceof InvalidNameError) {
          this.downAt = undefined
          this.onRead('unknown')
          return null
        }
        if (this.stopped) throw new RegistryUnavailableError('stopped')
        this.onRead('unavailable')
        this.markDown(`reading ${name}: ${(err as Error).message}`)
        // A vanished hl-service: look for another one next time.
        this.locator.drop(client.target)
        throw err instanceof RegistryUnavailableError
          ? err
          : new RegistryUnavailableError((err as Error).message, { cause: err })
      }
    } finally {
      this.release()
    }
  }

  private async slot(): Promise<void> {
    if (this.reads < this.maxReads) {
      this.reads++
      return
    }
    if (this.queue.length >= MAX_QUEUED_READS) {
      throw new RegistryUnavailableError(`${this.queue.length} registry reads wait already`)
    }
    // The slot is handed over by release(): `reads` does not change.
    await new Promise<void>((resolve) => this.queue.push(resolve))
  }

  private release(): void {
    const next = this.queue.shift()
    if (next != null) next()
    else this.reads--
  }

  private markDown(why: string): void {
    if (this.downAt == null) this.log?.('registry unavailable: %s', why)
    this.downAt = performance.now()
  }

  /** The client of `--hl`, or of an hl-service found in the DHT (one lookup at a time,
   * none while the registry is down); undefined when none is found. */
  private async registry(): Promise<HashLookupClient | undefined> {
    const target = await this.locator.locate()
    if (target == null) return undefined
    if (this.client?.target !== target) this.client = new HashLookupClient(this.libp2p, target)
    return this.client
  }

  /** Keeps a change-notice stream open to the registry in use, for as long as it runs. */
  private async watch(): Promise<void> {
    const backoff = new Backoff(WATCH_BACKOFF)
    const signal = this.controller.signal
    while (!signal.aborted) {
      const client = this.locator.current != null ? await this.registry() : undefined
      if (client == null) {
        // No registry known: look for one as soon as a lookup may be made again, not only
        // when a request asks, so that notices and reads resume by themselves.
        await this.untilLookup()
        if (!signal.aborted) await this.registry()
        continue
      }
      try {
        await this.subscribe(client, signal, () => {
          backoff.reset()
          // The registry answers again: reads need not wait out the retry period.
          this.downAt = undefined
        })
      } catch (err) {
        if (!signal.aborted && this.notified) {
          this.log?.('change notices from hl-service lost: %s', (err as Error).message)
        }
      } finally {
        this.notified = false
      }
      if (!(await backoff.wait(signal))) return
    }
  }

  /** Resolves when a registry lookup may be made (RECORD_CACHE_RETRY_MS after a failure),
   * or at once when woken (a registry found, stop()). */
  private async untilLookup(): Promise<void> {
    const waitMs =
      this.downAt == null ? 0 : Math.max(0, this.retryMs - (performance.now() - this.downAt))
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, waitMs)
      this.wakeWatcher = () => {
        clearTimeout(timer)
        resolve()
      }
    })
    this.wakeWatcher = undefined
  }

  private async subscribe(
    client: HashLookupClient,
    signal: AbortSignal,
    onSubscribed: () => void,
  ): Promise<void> {
    const rpc = await openRpc(this.libp2p, client.target, HL_WATCH, {
      signal,
      idleTimeoutMs: WATCH_IDLE_TIMEOUT_MS,
    })
    try {
      await rpc.writeJson({}, signal)
      await expectReply(rpc, signal)
      // Whatever was read before this stream may have changed unnoticed.
      this.session++
      this.notified = true
      onSubscribed()
      this.log?.('change notices from hl-service %s', String(client.target))
      // Until the stream ends, or another registry is in use (the next notice says so).
      while (this.locator.current === client.target) {
        this.apply(await rpc.readJson<WatchNotice>(signal))
      }
    } finally {
      rpc.abort(new Error('unsubscribed'))
    }
  }

  private apply(notice: WatchNotice): void {
    if (notice == null || typeof notice !== 'object') {
      throw new ProtocolViolationError('malformed change notice')
    }
    const { changed } = notice
    if (
      notice.reset === true ||
      (Array.isArray(changed) && changed.length > MAX_NAMES_PER_NOTICE)
    ) {
      this.session++
      return
    }
    if (!Array.isArray(changed)) return // a heartbeat
    for (const name of changed) {
      const e = typeof name === 'string' ? this.entries.get(name) : undefined
      if (e != null) e.gen++
    }
  }
}
