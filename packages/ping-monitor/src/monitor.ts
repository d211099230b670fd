import { setTimeout as sleep } from 'node:timers/promises'
import type { IdentifyResult, Logger, PeerId } from '@libp2p/interface'
import { type MeshNode, roleFromAgentVersion } from '@mtc/p2pnode'
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { DEFAULT_INTERVAL_MS, DEFAULT_PEER_EXPIRY_MS, MAX_CONCURRENT_PROBES } from './constants.ts'
import { PeerTable } from './peer-table.ts'

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
  private readonly node: MeshNode
  private readonly init: Required<Omit<PingMonitorInit, 'log' | 'registry'>>
  private readonly log: Logger
  private controller?: AbortController
  private loop?: Promise<void>
  private readonly probes: Counter<'outcome'>
  private readonly probeDuration: Histogram

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
  }

  private readonly onConnect = (evt: CustomEvent<PeerId>): void => {
    this.table.connected(evt.detail.toString(), undefined)
  }

  private readonly onDisconnect = (evt: CustomEvent<PeerId>): void => {
    this.table.disconnected(evt.detail.toString())
  }

  private readonly onIdentify = (evt: CustomEvent<IdentifyResult>): void => {
    const { peerId, agentVersion } = evt.detail
    this.table.connected(peerId.toString(), roleFromAgentVersion(agentVersion))
  }

  /** One probe round per interval; a slow round delays the next instead of overlapping. */
  private async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const started = performance.now()
      await this.probeAll(signal)
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
      this.log.trace('probe of %s failed: %s', id, (err as Error).message)
    }
  }
}
