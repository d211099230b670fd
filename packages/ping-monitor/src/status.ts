import type { IncomingMessage } from 'node:http'
import { advertisedMetricsHost, hostPort } from '@mtc/p2pnode'
import type { AllocatorLoad } from './allocator-status.ts'
import type { PeerEntry } from './peer-table.ts'
import type { RecentError } from './recent-errors.ts'

/** The monitor itself, as the discovery list and the status page show it. */
export interface SelfInfo {
  peerId: string
  role: string
  version: string
  /** Where this monitor's own metrics server is bound, if it has one. */
  metrics?: { host: string; port: number }
}

/** One group of Prometheus' HTTP service discovery format. */
export interface SdGroup {
  targets: string[]
  labels: Record<string, string>
}

/**
 * `__meta_` labels: Prometheus drops them after relabelling, so a deployment chooses what
 * becomes a target label (deploy/prometheus.yml maps them to job, mtc_role, mtc_peer_id...)
 * and none clashes with a metric's own `role` or `service` label.
 */
function sdGroup(target: string, role: string, peerId: string, service?: string): SdGroup {
  const host = target.replace(/:\d+$/, '').replace(/^\[|\]$/g, '')
  const labels: Record<string, string> = {
    __meta_mtc_role: role,
    __meta_mtc_peer_id: peerId,
    __meta_mtc_host: host,
  }
  if (service != null) labels.__meta_mtc_service = service
  return { targets: [target], labels }
}

/** The host a client reached us by (the Host header), for a server bound to every interface. */
export function requestHost(req: IncomingMessage): string {
  try {
    const h = new URL(`http://${req.headers.host ?? ''}`).hostname
    return h.replace(/^\[|\]$/g, '') || 'localhost'
  } catch {
    return 'localhost'
  }
}

/** Every connected peer that told where its metrics are, and the monitor itself. */
export function discoveryTargets(self: SelfInfo, peers: PeerEntry[], reachedAs: string): SdGroup[] {
  const out: SdGroup[] = []
  if (self.metrics != null) {
    const host = advertisedMetricsHost(self.metrics.host) ?? reachedAs
    out.push(sdGroup(hostPort(host, self.metrics.port), self.role, self.peerId))
  }
  for (const p of peers) {
    if (!p.connected || p.metrics == null) continue
    out.push(sdGroup(p.metrics, p.role ?? 'unknown', p.peerId, p.service))
  }
  return out
}

export interface PeerStatus {
  peerId: string
  role: string | null
  host: string | null
  connected: boolean
  rttMs: number | null
  smoothedRttMs: number | null
  lastSeen: number
  probesFailed: number
  metrics: string | null
  service: string | null
  ready: boolean | null
  allocations: AllocatorLoad | null
}

export interface ServiceStatus {
  name: string
  instances: { peerId: string; host: string | null; ready: boolean | null; rttMs: number | null }[]
}

/** What /api/status answers and the status page renders. */
export interface StatusDocument {
  now: number
  self: { peerId: string; role: string; version: string }
  peers: PeerStatus[]
  services: ServiceStatus[]
  /** Connected allocators and their load. */
  allocators: ({ peerId: string; host: string | null } & AllocatorLoad)[]
  errors: RecentError[]
}

const ms = (s: number | undefined): number | null => (s == null ? null : s * 1000)

export function statusDocument(
  self: SelfInfo,
  peers: PeerEntry[],
  errors: RecentError[],
  now = Date.now(),
): StatusDocument {
  const services = new Map<string, ServiceStatus>()
  for (const p of peers) {
    if (p.service == null || !p.connected) continue
    let s = services.get(p.service)
    if (s == null) {
      s = { name: p.service, instances: [] }
      services.set(p.service, s)
    }
    s.instances.push({
      peerId: p.peerId,
      host: p.host ?? null,
      ready: p.ready ?? null,
      rttMs: ms(p.smoothedRttSeconds),
    })
  }
  return {
    now,
    self: { peerId: self.peerId, role: self.role, version: self.version },
    peers: peers.map((p) => ({
      peerId: p.peerId,
      role: p.role ?? null,
      host: p.host ?? null,
      connected: p.connected,
      rttMs: ms(p.rttSeconds),
      smoothedRttMs: ms(p.smoothedRttSeconds),
      lastSeen: p.lastSeen,
      probesFailed: p.probesFailed,
      metrics: p.metrics ?? null,
      service: p.service ?? null,
      ready: p.ready ?? null,
      allocations: p.allocations ?? null,
    })),
    services: [...services.values()].sort((a, b) => a.name.localeCompare(b.name)),
    allocators: peers.flatMap((p) =>
      p.connected && p.allocations != null
        ? [{ peerId: p.peerId, host: p.host ?? null, ...p.allocations }]
        : [],
    ),
    errors,
  }
}
