import type { Libp2p, Logger, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import {
  ALLOCATION_TIMEOUT_MS,
  allocatorStatus,
  NO_CAPACITY,
  requestAllocation,
} from '@mtc/allocator/client'
import { InvalidNameError, NotFoundError } from '@mtc/hash-lookup/client'
import { ProviderDirectory, probeStatusAndRtt, RemoteError, raceSignal } from '@mtc/p2pnode'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import type { AllocationRequest, Allocator } from './allocator.ts'
import type { ScaleOutResult } from './autoscaler.ts'
import {
  ALLOCATOR_LOOKUP_TIMEOUT_MS,
  ALLOCATOR_NEGATIVE_CACHE_MS,
  ALLOCATOR_PROBE_TIMEOUT_MS,
  ALLOCATOR_REFRESH_MS,
  MAX_ALLOCATION_ATTEMPTS,
  MAX_ALLOCATORS,
  RTT_SAMPLES_PER_PROBE,
} from './constants.ts'
import { ProxyError } from './errors.ts'

export interface MeshAllocatorInit {
  libp2p: Libp2p
  log: Logger
}

/** An allocator that answered its probe. */
interface Answering {
  peer: PeerId
  rttMs: number
  free: number
  /** Instances running and starting there, per service. */
  services: Record<string, { running: number; starting: number }>
}

/** The multiaddr protocol code of `/p2p/<peerId>`. */
const P2P_CODE = 421

/** Registry answers that every allocator would give alike: asking another is useless. */
const UNKNOWN_SERVICE_CODES = new Set<string>([NotFoundError.code, InvalidNameError.code])

/**
 * The allocator client of the proxy: allocators are found in the DHT (a ProviderDirectory
 * of `allocator` records, looked up again in the background every ALLOCATOR_REFRESH_MS),
 * those answering a probe (dial + ping RTT + status) and having room are asked in order
 * of RTT, at most MAX_ALLOCATION_ATTEMPTS of them, until one starts the instance.
 */
export class MeshAllocator implements Allocator {
  private readonly libp2p: Libp2p
  private readonly log: Logger
  private readonly directory: ProviderDirectory

  constructor(init: MeshAllocatorInit) {
    this.libp2p = init.libp2p
    this.log = init.log
    this.directory = new ProviderDirectory(init.libp2p, {
      kind: 'allocator',
      refreshMs: ALLOCATOR_REFRESH_MS,
      negativeCacheMs: ALLOCATOR_NEGATIVE_CACHE_MS,
      lookupTimeoutMs: ALLOCATOR_LOOKUP_TIMEOUT_MS,
      limit: MAX_ALLOCATORS,
      log: init.log,
    })
  }

  start(): void {
    this.directory.start()
  }

  async stop(): Promise<void> {
    await this.directory.stop()
  }

  async allocate({ service, signal }: AllocationRequest): Promise<PeerId | undefined> {
    const known = await this.directory.list(signal)
    if (known.length === 0) return undefined
    const answering = await this.probeAll(known, signal)
    if (answering.length === 0) {
      this.log('none of %d known allocator(s) answers', known.length)
      return undefined
    }
    this.log(
      'allocators for %s: %s',
      service,
      answering.map((a) => `${a.peer} ${a.rttMs.toFixed(1)} ms, ${a.free} free`).join('; '),
    )
    const withRoom = answering.filter((a) => a.free > 0)
    if (withRoom.length === 0) {
      throw new ProxyError('ERR_NO_CAPACITY', `${answering.length} allocator(s) answered, all full`)
    }
    let lastError: Error | undefined
    let full = 0
    const tried = withRoom.slice(0, MAX_ALLOCATION_ATTEMPTS)
    for (const a of tried) {
      try {
        return await this.request(a, service, signal)
      } catch (err) {
        if (signal.aborted) throw err
        const code = err instanceof RemoteError ? err.code : undefined
        this.log('allocator %p: %s: %s', a.peer, code ?? 'failed', (err as Error).message)
        if (code != null && UNKNOWN_SERVICE_CODES.has(code)) {
          throw new ProxyError('ERR_UNKNOWN_SERVICE', (err as Error).message)
        }
        if (code === NO_CAPACITY) full++
        lastError = err as Error
      }
    }
    if (full === tried.length) {
      throw new ProxyError('ERR_NO_CAPACITY', `${full} allocator(s) asked, all full`)
    }
    throw new ProxyError('ERR_ALLOCATION_FAILED', lastError?.message)
  }

  /**
   * One more instance of `service` on the nearest allocator with room (which may run one
   * already) — unless what the allocators report says another proxy is starting one now,
   * or they run `maxInstances` of it: scale-outs decided by many proxies at once do not
   * add up (the allocators' counts are the mesh-wide view no proxy has by itself).
   */
  async scaleOut(
    service: string,
    maxInstances: number,
    signal: AbortSignal,
  ): Promise<ScaleOutResult> {
    const known = await this.directory.list(signal)
    const answering = await this.probeAll(known, signal)
    let running = 0
    let starting = 0
    for (const a of answering) {
      const c = a.services[service]
      running += Number(c?.running) || 0
      starting += Number(c?.starting) || 0
    }
    if (starting > 0) return { skipped: 'starting' }
    if (running >= maxInstances) return { skipped: 'at-max' }
    const withRoom = answering.filter((a) => a.free > 0)
    if (withRoom.length === 0) {
      throw new ProxyError('ERR_NO_CAPACITY', `${answering.length} allocator(s) answered, all full`)
    }
    let lastError: Error | undefined
    for (const a of withRoom.slice(0, MAX_ALLOCATION_ATTEMPTS)) {
      try {
        return { peer: await this.request(a, service, signal, true) }
      } catch (err) {
        if (signal.aborted) throw err
        this.log('allocator %p: scale-out of %s: %s', a.peer, service, (err as Error).message)
        lastError = err as Error
      }
    }
    const code = lastError instanceof RemoteError ? lastError.code : undefined
    throw new ProxyError(
      code === NO_CAPACITY ? 'ERR_NO_CAPACITY' : 'ERR_ALLOCATION_FAILED',
      lastError?.message,
    )
  }

  /** Asks one allocator; puts the instance's addresses in the peer store. */
  private async request(
    a: Answering,
    service: string,
    signal: AbortSignal,
    scaleOut = false,
  ): Promise<PeerId> {
    const started = performance.now()
    const instance = await raceSignal(
      requestAllocation(this.libp2p, a.peer, service, {
        scaleOut,
        // The allocator package's own bound, on the whole exchange.
        signal: AbortSignal.any([signal, AbortSignal.timeout(ALLOCATION_TIMEOUT_MS)]),
      }),
      signal,
    )
    const peer = peerIdFromString(instance.peerId)
    const addrs = instanceAddrs(instance.addrs, peer)
    if (addrs.length > 0) await this.libp2p.peerStore.merge(peer, { multiaddrs: addrs })
    this.log(
      'allocator %p %s instance %p of %s in %d ms',
      a.peer,
      instance.started ? 'started' : 'handed out',
      peer,
      service,
      Math.round(performance.now() - started),
    )
    return peer
  }

  /** Probes the allocators in parallel; those answering, nearest first. */
  private async probeAll(peers: PeerId[], signal: AbortSignal): Promise<Answering[]> {
    const results = await Promise.all(peers.map((p) => this.probe(p, signal)))
    return results.filter((a) => a != null).sort((x, y) => x.rttMs - y.rttMs)
  }

  private async probe(peer: PeerId, outer: AbortSignal): Promise<Answering | undefined> {
    const signal = AbortSignal.any([outer, AbortSignal.timeout(ALLOCATOR_PROBE_TIMEOUT_MS)])
    try {
      const { status, rttMs } = await probeStatusAndRtt(this.libp2p, peer, allocatorStatus, {
        signal,
        samples: RTT_SAMPLES_PER_PROBE,
      })
      const free = status.maxInstances - status.running - status.starting
      const services =
        typeof status.services === 'object' && status.services != null ? status.services : {}
      return { peer, rttMs, free: Number.isFinite(free) ? free : 0, services }
    } catch (err) {
      this.log.trace('allocator %p does not answer: %s', peer, (err as Error).message)
      return undefined
    }
  }
}

/** The allocator's multiaddrs of the instance (each ending in its /p2p/ part), minus that
 * part; addresses of another peer or unparsable ones are dropped. */
function instanceAddrs(addrs: unknown, peer: PeerId): Multiaddr[] {
  if (!Array.isArray(addrs)) return []
  const out: Multiaddr[] = []
  for (const a of addrs) {
    try {
      const ma = multiaddr(String(a))
      const id = ma.getComponents().find((c) => c.name === 'p2p')?.value
      if (id != null && id !== peer.toString()) continue
      out.push(id != null ? ma.decapsulateCode(P2P_CODE) : ma)
    } catch {
      // not a multiaddr: skip
    }
  }
  return out
}
