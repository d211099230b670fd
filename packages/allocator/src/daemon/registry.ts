import type { Libp2p, Logger, PeerId } from '@libp2p/interface'
import { NotFoundError, RecordCache, type ServiceRecord } from '@mtc/hash-lookup'
import { raceSignal } from '@mtc/p2pnode'
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
  private readonly cache: RecordCache

  constructor(libp2p: Libp2p, fixed?: Multiaddr, log?: Logger) {
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
    return await this.cache.registryPeer(signal)
  }

  /** The record of `service`; NotFoundError when the registry has none. */
  async get(service: string, signal: AbortSignal): Promise<ServiceRecord> {
    signal.throwIfAborted()
    const record = await raceSignal(this.cache.get(service), signal)
    if (record == null) throw new NotFoundError(`Unknown service "${service}"`)
    return record
  }
}
