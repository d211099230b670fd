import type { AllocatorLoad } from './allocator-status.ts'
import { RTT_SMOOTHING } from './constants.ts'

export interface PeerEntry {
  peerId: string
  role: string | undefined
  /** Last measured RTT in seconds; undefined until the first probe answered. */
  rttSeconds: number | undefined
  smoothedRttSeconds: number | undefined
  /** Wall-clock ms of the last answer (or of the connection, before any answer). */
  lastSeen: number
  connected: boolean
  probesFailed: number
  /** The IP this monitor sees the peer connect from. */
  host?: string
  /** The peer's Prometheus target, `host:port`, from its metrics-info answer. */
  metrics?: string
  /** For a service-mode proxy: its service and whether the service answers. */
  service?: string
  ready?: boolean
  /** For an allocator: its instances running, starting and allowed. */
  allocations?: AllocatorLoad
}

/** RTT per peer, smoothed like TCP's SRTT, forgetting peers unheard for `expiryMs`. */
export class PeerTable {
  private readonly entries = new Map<string, PeerEntry>()
  private readonly expiryMs: number

  constructor(expiryMs: number) {
    this.expiryMs = expiryMs
  }

  connected(peerId: string, role: string | undefined, now = Date.now()): void {
    const e = this.entries.get(peerId)
    if (e == null) {
      this.entries.set(peerId, {
        peerId,
        role,
        rttSeconds: undefined,
        smoothedRttSeconds: undefined,
        lastSeen: now,
        connected: true,
        probesFailed: 0,
      })
      return
    }
    e.connected = true
    e.role = role ?? e.role
    e.lastSeen = now
  }

  disconnected(peerId: string): void {
    const e = this.entries.get(peerId)
    if (e != null) e.connected = false
  }

  recordRtt(peerId: string, seconds: number, now = Date.now()): void {
    const e = this.entries.get(peerId)
    if (e == null) return
    e.rttSeconds = seconds
    e.smoothedRttSeconds =
      e.smoothedRttSeconds == null
        ? seconds
        : e.smoothedRttSeconds + RTT_SMOOTHING * (seconds - e.smoothedRttSeconds)
    e.lastSeen = now
  }

  recordFailure(peerId: string): void {
    const e = this.entries.get(peerId)
    if (e != null) e.probesFailed++
  }

  /** Drops peers unheard for longer than the expiry; returns how many went. */
  expire(now = Date.now()): number {
    let removed = 0
    for (const [id, e] of this.entries) {
      if (now - e.lastSeen > this.expiryMs) {
        this.entries.delete(id)
        removed++
      }
    }
    return removed
  }

  /** Merges what was learnt about a peer over the overlay (host, metrics, service). */
  learn(
    peerId: string,
    info: Partial<Pick<PeerEntry, 'host' | 'metrics' | 'service' | 'ready' | 'allocations'>>,
  ): void {
    const e = this.entries.get(peerId)
    if (e != null) Object.assign(e, info)
  }

  get(peerId: string): PeerEntry | undefined {
    return this.entries.get(peerId)
  }

  all(): PeerEntry[] {
    return [...this.entries.values()].sort((a, b) => a.peerId.localeCompare(b.peerId))
  }
}
