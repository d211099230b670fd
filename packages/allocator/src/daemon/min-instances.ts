import { setTimeout as sleep } from 'node:timers/promises'
import type { Libp2p, Logger, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { HashLookupClient, type ServiceRecord, scalingOf } from '@mtc/hash-lookup'
import { ProviderDirectory } from '@mtc/p2pnode'
import { allocatorStatus, requestAllocation } from '../client.ts'
import {
  ALLOCATION_TIMEOUT_MS,
  KEEPER_INTERVAL_MS,
  KEEPER_LOOKUP_TIMEOUT_MS,
  KEEPER_MAX_SERVICES,
  KEEPER_PEERS_REFRESH_MS,
  SURVEY_MAX_AGE_MS,
} from '../constants.ts'
import type { InstanceManager } from './instances.ts'
import type { AllocatorMetrics } from './metrics.ts'

type Counts = Record<string, { running: number; starting: number }>

export interface MinInstancesKeeperInit {
  libp2p: Libp2p
  manager: InstanceManager
  metrics: AllocatorMetrics
  /** The registry's hl-service (to list the records). */
  registryPeer: (signal: AbortSignal) => Promise<PeerId | undefined>
  /** The record of one service (cached). */
  lookup: (service: string, signal: AbortSignal) => Promise<ServiceRecord>
  log: Logger
}

/**
 * Keeps every service's `--min-instances` running, mesh-wide.
 *
 * Who keeps the promise: every allocator runs this, but only one acts — the one with the
 * lowest peer ID among the allocators that answer a status query (each round surveys
 * them: their status, the DHT's `allocator` providers being looked up every 30 s, which lists the instances
 * each runs or starts per service). The leader lists the records every KEEPER_INTERVAL_MS
 * and, for each service with fewer instances than its minimum, starts one (on itself when
 * it has room, else on the nearest other allocator, as a scale-out request) — one start per
 * service at a time. When the leader dies, it stops answering, and at the next round the
 * next-lowest allocator finds itself the leader: the promise is kept again within a round
 * or two (a few seconds). Two allocators that do not see each other may both act: one
 * instance too many, reaped as idle later (the count stays above the minimum).
 *
 * Every allocator also asks mayReap() before stopping an idle instance: never below the
 * minimum, judged on the same survey.
 */
export class MinInstancesKeeper {
  private readonly init: MinInstancesKeeperInit
  private readonly self: string
  private survey?: { at: number; counts: Map<string, Counts> }
  private readonly starting = new Set<string>()
  /** The other allocators, from the DHT (looked up again every KEEPER_PEERS_REFRESH_MS). */
  private readonly allocators: ProviderDirectory

  constructor(init: MinInstancesKeeperInit) {
    this.init = init
    this.self = init.libp2p.peerId.toString()
    this.allocators = new ProviderDirectory(init.libp2p, {
      kind: 'allocator',
      refreshMs: KEEPER_PEERS_REFRESH_MS,
      negativeCacheMs: KEEPER_PEERS_REFRESH_MS,
      lookupTimeoutMs: KEEPER_LOOKUP_TIMEOUT_MS,
    })
  }

  /** Rounds until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    try {
      while (!signal.aborted) {
        await this.round(signal).catch((err: Error) => {
          if (!signal.aborted) this.init.log.trace('min-instances round: %s', err.message)
        })
        await sleep(KEEPER_INTERVAL_MS, undefined, { signal }).catch(() => {})
      }
    } finally {
      await this.allocators.stop()
    }
  }

  /** Whether an idle instance of `service` may be stopped without going below its minimum. */
  async mayReap(service: string, signal: AbortSignal): Promise<boolean> {
    const record = await this.init.lookup(service, signal).catch(() => undefined)
    const { minInstances } = scalingOf(record)
    if (minInstances === 0) return true
    const survey =
      this.survey != null && performance.now() - this.survey.at < SURVEY_MAX_AGE_MS
        ? this.survey.counts
        : new Map([[this.self, this.init.manager.serviceCounts()]])
    return total(survey, service) - 1 >= minInstances
  }

  private async round(signal: AbortSignal): Promise<void> {
    // No service has a minimum (the usual case): no survey. Each survey asks every other
    // allocator, so every round would cost N² status queries mesh-wide and keep every
    // allocator-to-allocator connection busy (pinged every second by liveness).
    const records = await this.recordsWithMinimum(signal)
    if (records.length === 0) return
    const counts = await this.surveyAllocators(signal)
    this.survey = { at: performance.now(), counts }
    const leader = [...counts.keys()].sort()[0]
    if (leader !== this.self) return
    for (const record of records) {
      const { minInstances } = scalingOf(record)
      const have = total(counts, record.name)
      if (have >= minInstances || this.starting.has(record.name)) continue
      this.init.log(
        'service %s runs %d of its %d minimum instance(s): starting one',
        record.name,
        have,
        minInstances,
      )
      this.starting.add(record.name)
      void this.startOne(record.name, counts, signal).finally(() =>
        this.starting.delete(record.name),
      )
    }
  }

  /** One more instance: here when there is room, else on another allocator. */
  private async startOne(
    service: string,
    counts: Map<string, Counts>,
    signal: AbortSignal,
  ): Promise<void> {
    const { manager, metrics, libp2p, log } = this.init
    try {
      try {
        await manager.allocate(service, signal, true)
        metrics.minInstanceStarts.inc({ where: 'here' })
        return
      } catch (err) {
        if ((err as { code?: string }).code !== 'ERR_NO_CAPACITY') throw err
      }
      for (const peer of counts.keys()) {
        if (peer === this.self) continue
        try {
          await requestAllocation(libp2p, peerIdFromString(peer), service, {
            scaleOut: true,
            signal: AbortSignal.any([signal, AbortSignal.timeout(ALLOCATION_TIMEOUT_MS)]),
          })
          metrics.minInstanceStarts.inc({ where: 'other' })
          return
        } catch (err) {
          log.trace('min instance of %s on %s: %s', service, peer, (err as Error).message)
        }
      }
      throw new Error('no allocator has room')
    } catch (err) {
      metrics.minInstanceStarts.inc({ where: 'failed' })
      if (!signal.aborted) log.error('min instance of %s: %s', service, (err as Error).message)
    }
  }

  /** Per allocator that answers (this one included): its instances per service. */
  private async surveyAllocators(signal: AbortSignal): Promise<Map<string, Counts>> {
    const { libp2p, manager } = this.init
    const counts = new Map<string, Counts>([[this.self, manager.serviceCounts()]])
    // The first round waits for the allocators to be found; later ones use the last list.
    const peers = this.allocators.searched
      ? this.allocators.known()
      : await this.allocators.list(signal)
    await Promise.all(
      peers.map(async (peer) => {
        const status = await allocatorStatus(libp2p, peer, {
          signal: AbortSignal.any([signal, AbortSignal.timeout(KEEPER_LOOKUP_TIMEOUT_MS)]),
        }).catch(() => undefined)
        if (status != null) counts.set(peer.toString(), status.services ?? {})
      }),
    )
    return counts
  }

  private async recordsWithMinimum(signal: AbortSignal): Promise<ServiceRecord[]> {
    const peer = await this.init.registryPeer(signal)
    if (peer == null) return []
    const client = new HashLookupClient(this.init.libp2p, peer)
    const out: ServiceRecord[] = []
    let after: string | undefined
    for (let seen = 0; seen < KEEPER_MAX_SERVICES; ) {
      const page = await client.list({ after, limit: 1000 }, signal)
      seen += page.records.length
      for (const r of page.records) if (scalingOf(r).minInstances > 0) out.push(r)
      if (page.next == null) break
      after = page.next
    }
    return out
  }
}

function total(counts: Map<string, Counts>, service: string): number {
  let n = 0
  for (const c of counts.values()) n += (c[service]?.running ?? 0) + (c[service]?.starting ?? 0)
  return n
}
