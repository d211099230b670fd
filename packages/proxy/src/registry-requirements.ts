import type { Libp2p, Logger } from '@libp2p/interface'
import { findHashLookup, HashLookupClient, type ServiceRecord } from '@mtc/hash-lookup/client'
import type { Multiaddr } from '@multiformats/multiaddr'
import { raceSignal } from './abort.ts'
import {
  MAX_TRACKED_SERVICES,
  REGISTRY_LOOKUP_TIMEOUT_MS,
  REGISTRY_RETRY_MS,
  REQUIREMENTS_FETCH_TIMEOUT_MS,
  REQUIREMENTS_FIRST_WAIT_MS,
  REQUIREMENTS_NEGATIVE_TTL_MS,
  REQUIREMENTS_TTL_MS,
} from './constants.ts'
import type { ProxyMetrics } from './metrics.ts'
import type { Requirements, RequirementsSource } from './requirements.ts'

export interface RegistryRequirementsInit {
  libp2p: Libp2p
  log: Logger
  metrics?: ProxyMetrics
  /** `--hl`: this hl-service; else one is found through the DHT. */
  hl?: Multiaddr
}

interface Cached {
  /** What the record says; undefined: no record (or none read yet). */
  value?: Requirements
  /** When `value` was read; never: nothing read yet. */
  readAt: number
  /** How long `value` is fresh. */
  ttlMs: number
  reading?: Promise<void>
  /** A request already waited for the first read: later ones never do. */
  waited?: boolean
}

/** The registry's code for a name without a record. */
const UNKNOWN_SERVICE = 'ERR_UNKNOWN_SERVICE'

/**
 * Per-service requirements from the hash-lookup record (`perf.softRttMs/hardRttMs`),
 * cached per service for REQUIREMENTS_TTL_MS, unknown services for
 * REQUIREMENTS_NEGATIVE_TTL_MS. On the request path: a cached answer is returned at once
 * (a stale one while a fresh one is read in the background); only a service's first
 * request waits, at most REQUIREMENTS_FIRST_WAIT_MS. A registry that cannot be reached
 * never fails a request: the last record read stays in use, or `--config`'s limits apply
 * (undefined), and requests do not wait for it until it answers again.
 */
export class RegistryRequirements implements RequirementsSource {
  private readonly init: RegistryRequirementsInit
  private readonly log: Logger
  private readonly cache = new Map<string, Cached>()
  private readonly controller = new AbortController()
  private client?: HashLookupClient
  private finding?: Promise<HashLookupClient | undefined>
  /** When the registry last failed to answer (undefined: it answers). */
  private downAt?: number

  constructor(init: RegistryRequirementsInit) {
    this.init = init
    this.log = init.log
    if (init.hl != null) this.client = new HashLookupClient(init.libp2p, init.hl)
  }

  /** Looks for an hl-service at once, so that the first requests find it known. */
  start(): void {
    void this.registry()
  }

  async stop(): Promise<void> {
    this.controller.abort()
    await Promise.allSettled([this.finding, ...[...this.cache.values()].map((c) => c.reading)])
  }

  async get(service: string): Promise<Requirements | undefined> {
    let cached = this.cache.get(service)
    if (cached == null) {
      cached = { readAt: Number.NEGATIVE_INFINITY, ttlMs: 0 }
      this.remember(service, cached)
    }
    const age = performance.now() - cached.readAt
    if (age < cached.ttlMs) return cached.value
    if (this.controller.signal.aborted) return cached.value
    const reading = cached.reading ?? this.read(service, cached)
    // Stale, or the registry is known down: answer now, the read goes on behind.
    if (cached.readAt > Number.NEGATIVE_INFINITY || this.isDown() || cached.waited === true) {
      return cached.value
    }
    cached.waited = true
    await raceSignal(reading, AbortSignal.timeout(REQUIREMENTS_FIRST_WAIT_MS)).catch(() => {})
    return cached.value
  }

  private remember(service: string, cached: Cached): void {
    if (this.cache.size >= MAX_TRACKED_SERVICES) {
      // Maps iterate in insertion order: the first key is the oldest.
      const oldest = this.cache.keys().next().value
      if (oldest != null) this.cache.delete(oldest)
    }
    this.cache.set(service, cached)
  }

  private isDown(): boolean {
    return this.downAt != null && performance.now() - this.downAt < REGISTRY_RETRY_MS
  }

  private read(service: string, cached: Cached): Promise<void> {
    cached.reading = this.fetch(service, cached).finally(() => {
      cached.reading = undefined
    })
    return cached.reading
  }

  private async fetch(service: string, cached: Cached): Promise<void> {
    const client = await this.registry()
    if (client == null) return
    const signal = AbortSignal.any([
      this.controller.signal,
      AbortSignal.timeout(REQUIREMENTS_FETCH_TIMEOUT_MS),
    ])
    try {
      const record = await raceSignal(client.get(service, signal), signal)
      cached.value = requirementsOf(record)
      cached.readAt = performance.now()
      cached.ttlMs = REQUIREMENTS_TTL_MS
      this.downAt = undefined
      this.init.metrics?.registryReads.inc({ result: 'found' })
    } catch (err) {
      if (this.controller.signal.aborted) return
      const code = (err as { code?: unknown }).code
      if (code === UNKNOWN_SERVICE) {
        cached.value = undefined
        cached.readAt = performance.now()
        cached.ttlMs = REQUIREMENTS_NEGATIVE_TTL_MS
        this.downAt = undefined
        this.init.metrics?.registryReads.inc({ result: 'unknown' })
        return
      }
      // Keep what was read before; ask again after REGISTRY_RETRY_MS.
      this.markDown(`reading ${service}: ${(err as Error).message}`)
      this.init.metrics?.registryReads.inc({ result: 'unavailable' })
      if (this.init.hl == null) this.client = undefined
    }
  }

  /** The hl-service client: `--hl`'s, or one found in the DHT (looked for once at a time,
   * and not again for REGISTRY_RETRY_MS after finding none). */
  private async registry(): Promise<HashLookupClient | undefined> {
    if (this.client != null) return this.client
    if (this.finding != null) return await this.finding
    if (this.isDown()) return undefined
    this.finding = this.find().finally(() => {
      this.finding = undefined
    })
    return await this.finding
  }

  private async find(): Promise<HashLookupClient | undefined> {
    const { libp2p } = this.init
    const signal = AbortSignal.any([
      this.controller.signal,
      AbortSignal.timeout(REGISTRY_LOOKUP_TIMEOUT_MS),
    ])
    try {
      const peer = await findHashLookup(libp2p, signal)
      this.log('reading service requirements from hl-service %p', peer)
      this.client = new HashLookupClient(libp2p, peer)
      return this.client
    } catch (err) {
      if (!this.controller.signal.aborted) this.markDown((err as Error).message)
      return undefined
    }
  }

  private markDown(why: string): void {
    if (this.downAt == null) {
      this.log('registry unavailable, using cached or --config requirements: %s', why)
    }
    this.downAt = performance.now()
  }
}

/** The record's RTT limits; anything not a positive number is ignored. */
function requirementsOf(record: ServiceRecord): Requirements {
  const perf = record.perf ?? {}
  const positive = (v: unknown): number | undefined =>
    typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : undefined
  return { softRttMs: positive(perf.softRttMs), hardRttMs: positive(perf.hardRttMs) }
}
