import { setTimeout as sleep } from 'node:timers/promises'
import type { IdentifyResult, Logger, PeerId } from '@libp2p/interface'
import {
  hostPort,
  METRICS_INFO_PROTOCOL,
  type MeshNode,
  multiaddrHost,
  queryMetricsInfo,
  queryStatus,
  roleFromAgentVersion,
  STATUS_PROTOCOL,
} from '@mtc/p2pnode'
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { ALLOCATOR_STATUS_PROTOCOL, queryAllocatorLoad } from './allocator-status.ts'
import {
  DEFAULT_INTERVAL_MS,
  DEFAULT_PEER_EXPIRY_MS,
  MAX_CONCURRENT_PROBES,
  RECENT_ERRORS,
  STATUS_REFRESH_MS,
} from './constants.ts'
import { PeerTable } from './peer-table.ts'
import { RecentErrors } from './recent-errors.ts'

export interface PingMonitorInit {
  intervalMs?: number
  peerExpiryMs?: number
  registry: Registry
  log: Logger
}

/**
 * Probes the RTT of every connected peer each interval over the overlay and exports
 * the table as Prometheus gauges (series follow the table, so expired peers vanish).
 */
export class PingMonitor {
  readonly table: PeerTable
  /** Failed probes and queries, for the status page. */
  readonly errors = new RecentErrors(RECENT_ERRORS)
  private readonly node: MeshNode
  private readonly init: Required<Omit<PingMonitorInit, 'log' | 'registry'>>
  private readonly log: Logger
  private controller?: AbortController
  private loop?: Promise<void>
  private readonly probes: Counter<'outcome'>
  private readonly probeDuration: Histogram
  /** Metrics-info and status queries under way, awaited by stop(). */
  private readonly queries = new Map<string, Promise<void>>()
  private lastStatusRefresh = 0

  constructor(node: MeshNode, init: PingMonitorInit) {
    this.node = node
    this.log = init.log
    this.init = {
      intervalMs: init.intervalMs ?? DEFAULT_INTERVAL_MS,
      peerExpiryMs: init.peerExpiryMs ?? DEFAULT_PEER_EXPIRY_MS,
    }
    this.table = new PeerTable(this.init.peerExpiryMs)
    const table = this.table
    const registers = [init.registry]
    const rtt = new Gauge({
      name: 'mtc_ping_monitor_peer_rtt_seconds',
      help: 'Last round-trip time to the peer through the overlay',
      labelNames: ['peer', 'role'],
      registers,
      collect: () => {
        rtt.reset()
        for (const e of table.all()) {
          if (e.rttSeconds != null) rtt.set({ peer: e.peerId, role: e.role ?? '' }, e.rttSeconds)
        }
      },
    })
    const smoothed = new Gauge({
      name: 'mtc_ping_monitor_peer_rtt_smoothed_seconds',
      help: 'Smoothed round-trip time to the peer (EWMA, gain 1/8 as TCP SRTT)',
      labelNames: ['peer', 'role'],
      registers,
      collect: () => {
        smoothed.reset()
        for (const e of table.all()) {
          if (e.smoothedRttSeconds != null) {
            smoothed.set({ peer: e.peerId, role: e.role ?? '' }, e.smoothedRttSeconds)
          }
        }
      },
    })
    const peers: Gauge = new Gauge({
      name: 'mtc_ping_monitor_connected_peers',
      help: 'Peers connected to this ping-monitor',
      registers,
      collect: () => {
        peers.set(node.libp2p.getPeers().length)
      },
    })
    this.probes = new Counter({
      name: 'mtc_ping_monitor_probes_total',
      help: 'RTT probes sent, by outcome',
      labelNames: ['outcome'],
      registers,
    })
    this.probeDuration = new Histogram({
      name: 'mtc_ping_monitor_probe_rtt_seconds',
      help: 'Distribution of measured RTTs over all peers',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers,
    })
  }

  start(): void {
    if (this.controller != null) return
    this.controller = new AbortController()
    const libp2p = this.node.libp2p
    libp2p.addEventListener('peer:connect', this.onConnect)
    libp2p.addEventListener('peer:disconnect', this.onDisconnect)
    libp2p.addEventListener('peer:identify', this.onIdentify)
    for (const peer of libp2p.getPeers()) this.table.connected(peer.toString(), undefined)
    this.loop = this.run(this.controller.signal)
  }

  async stop(): Promise<void> {
    if (this.controller == null) return
    this.controller.abort()
    this.controller = undefined
    const libp2p = this.node.libp2p
    libp2p.removeEventListener('peer:connect', this.onConnect)
    libp2p.removeEventListener('peer:disconnect', this.onDisconnect)
    libp2p.removeEventListener('peer:identify', this.onIdentify)
    await this.loop
    await Promise.all(this.queries.values())
  }

  private readonly onConnect = (evt: CustomEvent<PeerId>): void => {
    this.table.connected(evt.detail.toString(), undefined)
  }

  private readonly onDisconnect = (evt: CustomEvent<PeerId>): void => {
    this.table.disconnected(evt.detail.toString())
  }

  private readonly onIdentify = (evt: CustomEvent<IdentifyResult>): void => {
    const { peerId, agentVersion, protocols, connection } = evt.detail
    const id = peerId.toString()
    this.table.connected(id, roleFromAgentVersion(agentVersion))
    const host = multiaddrHost(connection.remoteAddr)
    this.table.learn(id, { host })
    if (protocols.includes(METRICS_INFO_PROTOCOL)) {
      this.track(`metrics ${id}`, () => this.learnMetrics(peerId, host))
    }
    if (protocols.includes(STATUS_PROTOCOL)) {
      this.track(`status ${id}`, () => this.learnStatus(peerId))
    }
    if (protocols.includes(ALLOCATOR_STATUS_PROTOCOL)) {
      this.track(`allocations ${id}`, () => this.learnAllocations(peerId))
    }
  }

  /** Runs a query unless one of that kind is under way for the peer (identify can repeat). */
  private track(key: string, query: () => Promise<void>): void {
    if (this.queries.has(key)) return
    const p = query().finally(() => this.queries.delete(key))
    this.queries.set(key, p)
  }

  /** Where the peer's metrics are: its own host if it names one, else the one seen. */
  private async learnMetrics(peer: PeerId, seenHost: string | undefined): Promise<void> {
    const signal = this.controller?.signal
    const id = peer.toString()
    try {
      const info = await queryMetricsInfo(this.node.libp2p, peer, { signal })
      const host = info.host ?? seenHost
      if (host != null) this.table.learn(id, { metrics: hostPort(host, info.port) })
    } catch (err) {
      if (signal?.aborted !== true) {
        this.errors.add(id, `metrics info: ${(err as Error).message}`)
      }
    }
  }

  /** Which service a service-mode proxy serves, and whether it answers. */
  private async learnStatus(peer: PeerId): Promise<void> {
    const signal = this.controller?.signal
    const id = peer.toString()
    try {
      const status = await queryStatus(this.node.libp2p, peer, { signal })
      this.table.learn(id, { service: status.service, ready: status.ready })
    } catch (err) {
      if (signal?.aborted !== true) this.errors.add(id, `status: ${(err as Error).message}`)
    }
  }

  /** How many instances an allocator runs and starts, for the status page. */
  private async learnAllocations(peer: PeerId): Promise<void> {
    const signal = this.controller?.signal
    const id = peer.toString()
    try {
      const allocations = await queryAllocatorLoad(this.node.libp2p, peer, { signal })
      this.table.learn(id, { allocations })
    } catch (err) {
      if (signal?.aborted !== true) this.errors.add(id, `allocations: ${(err as Error).message}`)
    }
  }

  /** Readiness and allocations change: asked again every STATUS_REFRESH_MS. */
  private async refreshStatuses(): Promise<void> {
    if (Date.now() - this.lastStatusRefresh < STATUS_REFRESH_MS) return
    this.lastStatusRefresh = Date.now()
    const queries: (() => Promise<void>)[] = []
    for (const p of this.node.libp2p.getPeers()) {
      const e = this.table.get(p.toString())
      if (e?.service != null) queries.push(() => this.learnStatus(p))
      if (e?.allocations != null) queries.push(() => this.learnAllocations(p))
    }
    for (let i = 0; i < queries.length; i += MAX_CONCURRENT_PROBES) {
      await Promise.all(queries.slice(i, i + MAX_CONCURRENT_PROBES).map((q) => q()))
    }
  }

  /** One probe round per interval; a slow round delays the next instead of overlapping. */
  private async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const started = performance.now()
      await this.probeAll(signal)
      await this.refreshStatuses()
      const removed = this.table.expire()
      if (removed > 0)
        this.log('forgot %d peer(s) unheard for %d ms', removed, this.init.peerExpiryMs)
      const wait = Math.max(0, this.init.intervalMs - (performance.now() - started))
      try {
        await sleep(wait, undefined, { signal })
      } catch {
        return
      }
    }
  }

  private async probeAll(signal: AbortSignal): Promise<void> {
    const queue = [...this.node.libp2p.getPeers()]
    const worker = async (): Promise<void> => {
      for (let peer = queue.shift(); peer != null && !signal.aborted; peer = queue.shift()) {
        await this.probe(peer, signal)
      }
    }
    await Promise.all(Array.from({ length: Math.min(MAX_CONCURRENT_PROBES, queue.length) }, worker))
  }

  private async probe(peer: PeerId, signal: AbortSignal): Promise<void> {
    const id = peer.toString()
    try {
      const seconds = await this.node.rtt(peer, { signal })
      this.table.recordRtt(id, seconds)
      this.probes.inc({ outcome: 'ok' })
      this.probeDuration.observe(seconds)
    } catch (err) {
      if (signal.aborted) return
      this.table.recordFailure(id)
      this.probes.inc({ outcome: 'failed' })
      this.errors.add(id, `RTT probe: ${(err as Error).message}`)
      this.log.trace('probe of %s failed: %s', id, (err as Error).message)
    }
  }
}
