import type { Libp2p, PeerId } from '@libp2p/interface'
import {
  findHashLookup,
  HashLookupClient,
  RegistryUnavailableError,
  type ServiceRecord,
} from '@mtc/hash-lookup'
import type { Multiaddr } from '@multiformats/multiaddr'

/**
 * The registry as the allocator uses it: a given hl-service (--hl) or one found through
 * the DHT, remembered until it stops answering.
 */
export class RegistryAccess {
  private readonly libp2p: Libp2p
  private readonly fixed?: Multiaddr
  private found?: PeerId

  constructor(libp2p: Libp2p, fixed?: Multiaddr) {
    this.libp2p = libp2p
    this.fixed = fixed
  }

  /** The hl-service's peer ID, when known. */
  async peer(signal?: AbortSignal): Promise<PeerId | undefined> {
    if (this.fixed != null) return (await this.libp2p.dial(this.fixed, { signal })).remotePeer
    this.found ??= await findHashLookup(this.libp2p, signal)
    return this.found
  }

  async get(service: string, signal: AbortSignal): Promise<ServiceRecord> {
    const client = new HashLookupClient(this.libp2p, this.fixed ?? (await this.peer(signal))!)
    try {
      return await client.get(service, signal)
    } catch (err) {
      // A vanished hl-service: look for another one next time.
      if (err instanceof RegistryUnavailableError) this.found = undefined
      throw err
    }
  }
}
