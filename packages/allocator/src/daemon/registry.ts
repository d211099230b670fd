import type { Libp2p, Logger, PeerId } from '@libp2p/interface'
import {
  NotFoundError,
  RecordCache,
  RegistryUnavailableError,
  type ServiceRecord,
} from '@mtc/hash-lookup'
import type { Multiaddr } from '@multiformats/multiaddr'

/**
 * After a failed registry read, allocations fail at once (ERR_REGISTRY_UNAVAILABLE) for this
 * long instead of each waiting for a dead hl-service; short, as an allocation is rare and
 * worth a new try.
 */
const REGISTRY_RETRY_MS = 1_000

/**
 * The registry as the allocator uses it: a given hl-service (--hl) or one found through
 * the DHT. Records come from a RecordCache kept exact by hl-service's change notices, so
 * a flood of allocation requests for made-up names reads each name once, and a
 * registration or deletion takes effect for the next allocation.
 */
export class RegistryAccess {
  private readonly libp2p: Libp2p
  private readonly fixed?: Multiaddr
  private readonly cache: RecordCache

  constructor(libp2p: Libp2p, fixed?: Multiaddr, log?: Logger) {
    this.libp2p = libp2p
    this.fixed = fixed
    // A failed read keeps the registry "down" only briefly: an allocation is worth a retry.
    this.cache = new RecordCache(libp2p, { hl: fixed, log, retryMs: REGISTRY_RETRY_MS })
  }

  /** Finds the registry and subscribes to its change notices. */
  start(): void {
    this.cache.start()
  }

  async stop(): Promise<void> {
    await this.cache.stop()
  }

  /** The hl-service's peer ID, when known (it holds the tarballs it registered). */
  async peer(signal?: AbortSignal): Promise<PeerId | undefined> {
    if (this.fixed != null) return (await this.libp2p.dial(this.fixed, { signal })).remotePeer
    const target = this.cache.registryTarget()
    // Not fixed: the target is the peer found in the DHT.
    return (await (signal != null ? raceAbort(target, signal) : target)) as PeerId | undefined
  }

  /** The record of `service`; NotFoundError when the registry has none. */
  async get(service: string, signal: AbortSignal): Promise<ServiceRecord> {
    signal.throwIfAborted()
    const record = await raceAbort(this.cache.get(service), signal)
    if (record == null) throw new NotFoundError(`Unknown service "${service}"`)
    return record
  }
}

/** `promise`, or the signal's reason once it aborts (the read itself is shared: it goes on). */
async function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  const { promise: aborted, reject } = Promise.withResolvers<never>()
  const onAbort = (): void => reject(signal.reason ?? new RegistryUnavailableError('aborted'))
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    return await Promise.race([promise, aborted])
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}
