import type { Libp2p, Logger, PeerId } from '@libp2p/interface'
import { discoveryKey } from '@mtc/p2pnode'
import { iterateUntil, raceSignal } from './abort.ts'
import {
  ALLOCATOR_LOOKUP_TIMEOUT_MS,
  ALLOCATOR_NEGATIVE_CACHE_MS,
  ALLOCATOR_REFRESH_MS,
  MAX_ALLOCATORS,
} from './constants.ts'

/**
 * The allocators of the mesh as the DHT names them (provider records of `allocator`),
 * cached: looked up again in the background once older than ALLOCATOR_REFRESH_MS, and
 * before the next allocation when none was found. Records can be stale: callers probe
 * each allocator before using it.
 */
export class AllocatorDirectory {
  private readonly libp2p: Libp2p
  private readonly log: Logger
  private readonly controller = new AbortController()
  private peers: PeerId[] = []
  private lookedUpAt = Number.NEGATIVE_INFINITY
  private lookup?: Promise<void>

  constructor(libp2p: Libp2p, log: Logger) {
    this.libp2p = libp2p
    this.log = log
  }

  /** Starts the first lookup, so that the first allocation finds it done. */
  start(): void {
    this.refresh()
  }

  async stop(): Promise<void> {
    this.controller.abort()
    await this.lookup
  }

  /** The allocators known; waits for a lookup only when none is known. */
  async list(signal: AbortSignal): Promise<PeerId[]> {
    const age = performance.now() - this.lookedUpAt
    if (this.peers.length > 0) {
      if (age > ALLOCATOR_REFRESH_MS) this.refresh()
      return this.peers
    }
    if (this.lookup == null && age > ALLOCATOR_NEGATIVE_CACHE_MS) this.refresh()
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
    const { libp2p } = this
    const signal = AbortSignal.any([
      this.controller.signal,
      AbortSignal.timeout(ALLOCATOR_LOOKUP_TIMEOUT_MS),
    ])
    const found = new Map<string, PeerId>()
    try {
      const key = await discoveryKey('allocator')
      for await (const provider of iterateUntil(
        libp2p.contentRouting.findProviders(key, { signal }),
        signal,
      )) {
        if (provider.id.equals(libp2p.peerId)) continue
        if (provider.multiaddrs.length > 0) {
          await libp2p.peerStore.merge(provider.id, { multiaddrs: provider.multiaddrs })
        }
        found.set(provider.id.toString(), provider.id)
        if (found.size >= MAX_ALLOCATORS) break
      }
    } catch (err) {
      // A timeout keeps what was found so far.
      if (!this.controller.signal.aborted) {
        this.log.trace('allocator lookup ended: %s', (err as Error).message)
      }
    }
    if (this.controller.signal.aborted) return
    // A lookup that found nothing keeps the last known allocators (a DHT hiccup).
    if (found.size > 0 || this.peers.length === 0) {
      if (found.size !== this.peers.length) this.log('%d allocator(s) known', found.size)
      this.peers = [...found.values()]
    }
    this.lookedUpAt = performance.now()
  }
}
