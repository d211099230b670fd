import type { Libp2p, Logger, PeerId } from '@libp2p/interface'
import { raceSignal } from './abort.ts'
import { type DiscoveryKind, streamProviders } from './discovery.ts'

export interface ProviderDirectoryInit {
  kind: DiscoveryKind
  name?: string
  /** A list this old is looked up again, in the background. */
  refreshMs: number
  /** While none is known, a lookup at most this often. */
  negativeCacheMs: number
  /** Bound on one lookup; what it found until then is kept. */
  lookupTimeoutMs: number
  /** Providers kept, at most (default: all the lookup finds). */
  limit?: number
  log?: Logger
}

/**
 * The providers of `kind`/`name` as the DHT names them, cached: one lookup at a time,
 * looked up again in the background once older than `refreshMs`, and at most every
 * `negativeCacheMs` while none is known. A lookup that finds nothing keeps the last list
 * (a DHT hiccup). Records can be stale: callers probe a provider before relying on it.
 */
export class ProviderDirectory {
  private readonly libp2p: Libp2p
  private readonly init: ProviderDirectoryInit
  private readonly controller = new AbortController()
  private peers: PeerId[] = []
  private lookedUpAt = Number.NEGATIVE_INFINITY
  private lookup?: Promise<void>

  constructor(libp2p: Libp2p, init: ProviderDirectoryInit) {
    this.libp2p = libp2p
    this.init = init
  }

  /** Starts the first lookup, so that the first caller finds it done. */
  start(): void {
    this.refresh()
  }

  async stop(): Promise<void> {
    this.controller.abort()
    await this.lookup
  }

  /** Some lookup has ended (found or not). */
  get searched(): boolean {
    return this.lookedUpAt > Number.NEGATIVE_INFINITY
  }

  /** The providers known now, never waiting; starts a lookup in the background when due. */
  known(): PeerId[] {
    const age = performance.now() - this.lookedUpAt
    if (age > (this.peers.length > 0 ? this.init.refreshMs : this.init.negativeCacheMs)) {
      this.refresh()
    }
    return this.peers
  }

  /** The providers known; waits (bounded by `signal`) for a lookup only when none is. */
  async list(signal: AbortSignal): Promise<PeerId[]> {
    const known = this.known()
    if (known.length > 0) return known
    if (this.lookup != null) await raceSignal(this.lookup, signal)
    return this.peers
  }

  private refresh(): void {
    if (this.lookup != null || this.controller.signal.aborted) return
    this.lookup = this.find().finally(() => {
      this.lookup = undefined
    })
  }

  private async find(): Promise<void> {
    const { kind, name, limit, log } = this.init
    const signal = AbortSignal.any([
      this.controller.signal,
      AbortSignal.timeout(this.init.lookupTimeoutMs),
    ])
    const found: PeerId[] = []
    try {
      for await (const peer of streamProviders(this.libp2p, kind, name, { signal, limit })) {
        found.push(peer)
      }
    } catch (err) {
      // A timeout keeps what was found so far.
      if (!this.controller.signal.aborted) {
        log?.trace('%s lookup ended: %s', kind, (err as Error).message)
      }
    }
    if (this.controller.signal.aborted) return
    if (found.length > 0 || this.peers.length === 0) {
      if (found.length !== this.peers.length) log?.('%d %s(s) known', found.length, kind)
      this.peers = found
    }
    this.lookedUpAt = performance.now()
  }
}
