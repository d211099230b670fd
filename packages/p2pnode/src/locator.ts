import { setTimeout as sleep } from 'node:timers/promises'
import type { Libp2p, PeerId } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { raceSignal } from './abort.ts'
import { type DiscoveryKind, findProviders } from './discovery.ts'

/** Pause between two lookups that found no provider answering a dial. */
const LOOKUP_PAUSE_MS = 250
/** Lookups in one search, at most (the signal bounds it first). */
const MAX_LOOKUPS = 100

/**
 * A provider of `kind`/`name` that answers a dial: provider records can be stale, so each
 * candidate is dialled before it is returned; the DHT is asked again (every 250 ms, at
 * most `maxLookups` times) until one answers or `signal` aborts (then undefined).
 */
export async function findReachableProvider(
  libp2p: Libp2p,
  kind: DiscoveryKind,
  name: string,
  signal: AbortSignal,
  maxLookups = MAX_LOOKUPS,
): Promise<PeerId | undefined> {
  for (let i = 0; i < maxLookups && !signal.aborted; i++) {
    if (i > 0) {
      await sleep(LOOKUP_PAUSE_MS, undefined, { signal }).catch(() => {})
      if (signal.aborted) break
    }
    const candidates = await findProviders(libp2p, kind, name, { signal }).catch(() => [])
    for (const peer of candidates) {
      try {
        await libp2p.dial(peer, { signal })
        return peer
      } catch {
        // a stale record: try the next one
      }
    }
  }
  return undefined
}

export interface PeerLocatorInit {
  kind: DiscoveryKind
  name?: string
  /** The peer to use, given by a flag (`--hl`): never looked up, never dropped. */
  fixed?: Multiaddr
  /** Bound on one search in the DHT. */
  lookupTimeoutMs: number
  /** Whether a new search may start now (default: always), e.g. not while the peer's
   * service failed lately; a search under way is still joined. */
  mayLook?: () => boolean
  /** Told at the end of every search: the peer found, or undefined. */
  onLookupEnd?: (found: PeerId | undefined) => void
}

/**
 * Which peer of a kind (an hl-service...) to talk to: the fixed address when one was
 * given, else one found in the DHT that answered a dial, kept until the caller drops it
 * (it stopped answering); then the next locate() searches again. One search at a time,
 * shared by every caller. A search asks the DHT every 250 ms until its timeout (a peer
 * that just started may not have announced yet), but one that follows a search that
 * found none asks once: a mesh without that kind of peer (no hl-service) is searched
 * again and again by every node, and 20 lookups a search were most of an idle proxy's
 * CPU and allocation.
 */
export class PeerLocator {
  private readonly libp2p: Libp2p
  private readonly init: PeerLocatorInit
  private readonly controller = new AbortController()
  private found?: PeerId
  private searching?: Promise<PeerId | undefined>
  private ended = false
  /** The last search found none. */
  private missed = false

  constructor(libp2p: Libp2p, init: PeerLocatorInit) {
    this.libp2p = libp2p
    this.init = init
  }

  /** The peer in use: the fixed address, or the one found; undefined while none is. */
  get current(): PeerId | Multiaddr | undefined {
    return this.init.fixed ?? this.found
  }

  /** A search has ended at least once (found or not). */
  get searched(): boolean {
    return this.ended
  }

  /** The peer in use, else the one a search finds now (undefined: none answered, or a
   * search may not start now). */
  async locate(): Promise<PeerId | Multiaddr | undefined> {
    const current = this.current
    if (current != null) return current
    if (this.searching == null) {
      if (this.controller.signal.aborted || this.init.mayLook?.() === false) return undefined
      this.searching = this.search().finally(() => {
        this.searching = undefined
      })
    }
    return await this.searching
  }

  /** The peer ID of the peer in use (a fixed address is dialled to learn it), found now if
   * none is known; undefined when none is. */
  async peerId(signal?: AbortSignal): Promise<PeerId | undefined> {
    const { fixed } = this.init
    if (fixed != null) return (await this.libp2p.dial(fixed, { signal })).remotePeer
    const located = this.locate() as Promise<PeerId | undefined>
    return await (signal != null ? raceSignal(located, signal) : located)
  }

  /** `peer` stopped answering: forgotten, unless it is fixed or another is in use already. */
  drop(peer: PeerId | Multiaddr): void {
    if (this.found != null && this.found === peer) this.found = undefined
  }

  /** Ends a search under way; no new one starts. */
  async stop(): Promise<void> {
    this.controller.abort()
    await this.searching
  }

  private async search(): Promise<PeerId | undefined> {
    const { kind, name = '', lookupTimeoutMs } = this.init
    const signal = AbortSignal.any([this.controller.signal, AbortSignal.timeout(lookupTimeoutMs)])
    const lookups = this.missed ? 1 : MAX_LOOKUPS
    const peer = await findReachableProvider(this.libp2p, kind, name, signal, lookups)
    if (peer != null && !this.controller.signal.aborted) this.found = peer
    this.missed = peer == null
    this.ended = true
    this.init.onLookupEnd?.(this.found)
    return this.found
  }
}
