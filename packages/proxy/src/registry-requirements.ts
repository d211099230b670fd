import type { Libp2p, Logger } from '@libp2p/interface'
import {
  RecordCache,
  type RegistryAnswer,
  type ServiceRecord,
  scalingOf,
} from '@mtc/hash-lookup/client'
import { raceSignal } from '@mtc/p2pnode'
import type { Multiaddr } from '@multiformats/multiaddr'
import {
  MAX_TRACKED_SERVICES,
  REGISTRY_LOOKUP_TIMEOUT_MS,
  REGISTRY_RETRY_MS,
  REQUIREMENTS_FETCH_TIMEOUT_MS,
  REQUIREMENTS_FIRST_WAIT_MS,
  REQUIREMENTS_NEGATIVE_TTL_MS,
  REQUIREMENTS_TTL_MS,
} from './constants.ts'
import { ProxyError } from './errors.ts'
import type { ProxyMetrics } from './metrics.ts'
import type { Requirements, RequirementsSource } from './requirements.ts'

export interface RegistryRequirementsInit {
  libp2p: Libp2p
  log: Logger
  metrics?: ProxyMetrics
  /** `--hl`: this hl-service; else one is found through the DHT. */
  hl?: Multiaddr
}

/**
 * The registry's word on each service, from hash-lookup records (RecordCache: cached,
 * one read per name at a time, kept exact by hl-service's change notices):
 * - a service the registry does not know is refused at once (ERR_UNKNOWN_SERVICE), with
 *   no DHT lookup and no allocation, and stays refused without asking again until a
 *   change notice names it (without notices: for REQUIREMENTS_NEGATIVE_TTL_MS);
 * - a known one gets its record's RTT limits (`perf.softRttMs/hardRttMs`).
 * A request waits for a read at most REQUIREMENTS_FIRST_WAIT_MS after that read began
 * (REQUIREMENTS_FETCH_TIMEOUT_MS while change notices flow: the registry answers, if
 * slowly), later ones of the same read no longer, and not at all while the registry is down:
 * then the last record read stays in use, or `--config`'s limits apply (undefined), and
 * the request goes on as if the registry did not exist. Without change notices a record
 * is used for REQUIREMENTS_TTL_MS, then while a fresh one is read in the background.
 */
export class RegistryRequirements implements RequirementsSource {
  private readonly cache: RecordCache
  /** When waiting for each read in flight ends. */
  private readonly deadlines = new WeakMap<Promise<RegistryAnswer>, number>()

  constructor(init: RegistryRequirementsInit) {
    this.cache = new RecordCache(init.libp2p, {
      hl: init.hl,
      log: init.log,
      maxEntries: MAX_TRACKED_SERVICES,
      positiveTtlMs: REQUIREMENTS_TTL_MS,
      negativeTtlMs: REQUIREMENTS_NEGATIVE_TTL_MS,
      readTimeoutMs: REQUIREMENTS_FETCH_TIMEOUT_MS,
      lookupTimeoutMs: REGISTRY_LOOKUP_TIMEOUT_MS,
      retryMs: REGISTRY_RETRY_MS,
      onRead: (result) => init.metrics?.registryReads.inc({ result }),
    })
  }

  /** Looks for an hl-service at once and subscribes to its change notices. */
  start(): void {
    this.cache.start()
  }

  async stop(): Promise<void> {
    await this.cache.stop()
  }

  /** Names whose answer is held (bounded by MAX_TRACKED_SERVICES). */
  get size(): number {
    return this.cache.size
  }

  async get(service: string): Promise<Requirements | undefined> {
    const cache = this.cache
    const valid = cache.peek(service)
    if (valid !== undefined) return answer(service, valid)
    const last = cache.last(service)
    const fallback = last != null ? requirementsOf(last) : undefined
    if (cache.stopped || !cache.available) return fallback
    // No hl-service found in the mesh: no request waits for a lookup in the DHT (the cache
    // looks again by itself every REGISTRY_RETRY_MS); only a proxy's very first ones may.
    if (!cache.mayAnswer) return fallback
    const reading = cache.get(service)
    // Without notices a record may be stale, not wrong: use it, refresh it behind.
    if (last != null && !cache.live) {
      reading.catch(() => {})
      return fallback
    }
    const now = performance.now()
    let deadline = this.deadlines.get(reading)
    if (deadline == null) {
      // A registry whose notices flow answers: a slow read (a loaded host, a burst of
      // names) is still far cheaper to wait for than looking for instances of a name that
      // may not exist. Otherwise the request goes on after a short wait.
      deadline = now + (cache.live ? REQUIREMENTS_FETCH_TIMEOUT_MS : REQUIREMENTS_FIRST_WAIT_MS)
      this.deadlines.set(reading, deadline)
    }
    if (deadline <= now) {
      reading.catch(() => {})
      return fallback
    }
    const read = await raceSignal(reading, AbortSignal.timeout(Math.ceil(deadline - now))).catch(
      () => undefined,
    )
    return read !== undefined ? answer(service, read) : fallback
  }
}

/** The requirements of a record; "no such service" is refused. */
function answer(service: string, read: RegistryAnswer): Requirements {
  if (read == null) {
    throw new ProxyError('ERR_UNKNOWN_SERVICE', `the registry has no service ${service}`)
  }
  return requirementsOf(read)
}

/** The record's RTT limits; anything not a positive number is ignored. */
function requirementsOf(record: ServiceRecord): Requirements {
  const perf = record.perf ?? {}
  const positive = (v: unknown): number | undefined =>
    typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : undefined
  return {
    softRttMs: positive(perf.softRttMs),
    hardRttMs: positive(perf.hardRttMs),
    scaling: scalingOf(record),
    imageId: typeof record.imageId === 'string' ? record.imageId : undefined,
  }
}
