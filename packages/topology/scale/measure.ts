import { setTimeout as sleep } from 'node:timers/promises'
import { metricValue } from '@mtc/testkit'
import {
  cpuRates,
  type Daemon,
  type HostUsage,
  type Mesh,
  sampleHost,
  transferByProtocol,
} from '../src/index.ts'

/**
 * What each simulated host of a mesh costs over a quiet window: CPU, memory, bytes on
 * its WAN interface and, per libp2p protocol, what its daemons sent and received. The
 * scale scenarios print it per host kind (the mesh's traffic in a quiet window is its
 * upkeep: RTT probes, liveness pings, DHT, bootstrap keep-alive).
 */

/** A host's role in the mesh, by the daemons it runs. */
export type HostKind = 'registry' | 'bootstrap' | 'allocator' | 'client'

export function hostKind(mesh: Mesh, host: string): HostKind {
  const { spec } = mesh
  if (host === spec.registry) return 'registry'
  if (spec.bootstraps?.includes(host)) return 'bootstrap'
  if (spec.allocators.includes(host)) return 'allocator'
  return 'client'
}

const DAEMONS: Daemon[] = ['bootstrap', 'hl-service', 'allocator', 'proxy']

/** The daemons of a host that run now. */
function daemonsOf(mesh: Mesh, host: string): Daemon[] {
  return DAEMONS.filter((k) => {
    try {
      const c = mesh.proc(host, k)?.child
      return c != null && c.exitCode == null && c.signalCode == null
    } catch {
      return false // not planned there
    }
  })
}

/** What a process is: a daemon (by its pid), else its `comm` (etcd, dockerd, containerd…). */
function processName(mesh: Mesh, host: string, pid: number, comm: string): string {
  for (const k of daemonsOf(mesh, host)) if (mesh.proc(host, k)?.child.pid === pid) return k
  if (comm.startsWith('containerd-shim')) return 'shim'
  if (['etcd', 'dockerd', 'containerd'].includes(comm)) return comm
  return 'instance' // the containers' processes (host networking: same namespace)
}

export interface HostCost {
  host: string
  kind: HostKind
  /** Cores (CPU seconds per second) per process name, and in all. */
  cpu: Record<string, number>
  cpuTotal: number
  /** Memory at the end of the window (MiB): proportional (PSS) and resident (RSS). */
  pssMiB: Record<string, number>
  pssTotalMiB: number
  rssTotalMiB: number
  /** Bytes per second on the WAN interface, both ways. */
  wireBps: number
  /** Bytes per second per protocol group (sent + received) of the host's daemons. */
  protocolBps: Record<string, number>
  /** libp2p connections of the host's daemons at the end of the window. */
  connections: number
  /** Connections its daemons cut in the window as silent after a liveness ping. */
  silentCuts: number
}

/** Which group a libp2p protocol's bytes count in. */
function protocolGroup(protocol: string): string {
  if (protocol === 'global') return 'connection'
  if (protocol.includes('/kad/')) return 'dht'
  // RTT pings (probes and liveness share the protocol) and the status asked with a probe.
  if (/\/(rtt|ping|instance-status|alloc-status)\//.test(protocol)) return 'probes'
  if (protocol.includes('/id/')) return 'identify'
  return 'other'
}

async function scrapeAll(mesh: Mesh, hosts: readonly string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  await Promise.all(
    hosts.flatMap((h) =>
      daemonsOf(mesh, h).map(async (k) => {
        out.set(`${h}/${k}`, await mesh.metrics(h, k).catch(() => ''))
      }),
    ),
  )
  return out
}

function silentIn(metrics: string): number {
  return metricValue(metrics, 'mtc_liveness_pings_total', { verdict: 'silent' }) ?? 0
}

function connectionsIn(metrics: string): number {
  // libp2p's connection manager gauge, per direction.
  let n = 0
  for (const line of metrics.split('\n')) {
    const m = /^libp2p_connection_manager_connections\{[^}]*\}\s+(\S+)/.exec(line)
    if (m != null) n += Number(m[1])
  }
  return n
}

/** Samples every host, waits `windowMs` with nothing asked of the mesh, samples again. */
export async function measureHosts(mesh: Mesh, windowMs: number): Promise<HostCost[]> {
  const hosts = mesh.topo.hosts
  const sample = () =>
    new Map<string, HostUsage>(
      hosts.map((h) => [h, sampleHost(mesh.topo.netns(h), mesh.topo.wanIf(h))]),
    )
  const metricsBefore = await scrapeAll(mesh, hosts)
  const before = sample()
  await sleep(windowMs)
  const after = sample()
  const metricsAfter = await scrapeAll(mesh, hosts)
  return hosts.map((host) => {
    const a = before.get(host) as HostUsage
    const b = after.get(host) as HostUsage
    const s = (b.at - a.at) / 1000
    const rates = cpuRates(a, b)
    const cpu: Record<string, number> = {}
    const pssMiB: Record<string, number> = {}
    let rssTotalMiB = 0
    for (const p of b.procs) {
      const name = processName(mesh, host, p.pid, p.comm)
      cpu[name] = (cpu[name] ?? 0) + (rates.get(p.pid) ?? 0)
      pssMiB[name] = (pssMiB[name] ?? 0) + p.pssKiB / 1024
      rssTotalMiB += p.rssKiB / 1024
    }
    const protocolBps: Record<string, number> = {}
    let connections = 0
    let silentCuts = 0
    for (const k of daemonsOf(mesh, host)) {
      const key = `${host}/${k}`
      const by = transferByProtocol(metricsBefore.get(key) ?? '', metricsAfter.get(key) ?? '')
      for (const [label, bytes] of by) {
        const group = protocolGroup(label.replace(/ (sent|received)$/, ''))
        protocolBps[group] = (protocolBps[group] ?? 0) + bytes / s
      }
      connections += connectionsIn(metricsAfter.get(key) ?? '')
      silentCuts += silentIn(metricsAfter.get(key) ?? '') - silentIn(metricsBefore.get(key) ?? '')
    }
    const sum = (r: Record<string, number>) => Object.values(r).reduce((x, y) => x + y, 0)
    return {
      host,
      kind: hostKind(mesh, host),
      cpu,
      cpuTotal: sum(cpu),
      pssMiB,
      pssTotalMiB: sum(pssMiB),
      rssTotalMiB,
      wireBps: (b.rxBytes - a.rxBytes + (b.txBytes - a.txBytes)) / s,
      protocolBps,
      connections,
      silentCuts,
    }
  })
}

const mean = (xs: number[]) => (xs.length === 0 ? 0 : xs.reduce((x, y) => x + y, 0) / xs.length)

/** One line per host kind: the mean of its hosts (and the per-process split). */
export function costLines(costs: HostCost[]): string[] {
  const lines: string[] = []
  const kinds = [...new Set(costs.map((c) => c.kind))]
  for (const kind of kinds) {
    const of = costs.filter((c) => c.kind === kind)
    const split = (pick: (c: HostCost) => Record<string, number>, unit: (v: number) => string) => {
      const names = [...new Set(of.flatMap((c) => Object.keys(pick(c))))].sort()
      return names.map((n) => `${n} ${unit(mean(of.map((c) => pick(c)[n] ?? 0)))}`).join(', ')
    }
    lines.push(
      `${kind} (${of.length} hosts, mean per host): ` +
        `CPU ${(mean(of.map((c) => c.cpuTotal)) * 100).toFixed(2)} % of a core ` +
        `[${split(
          (c) => c.cpu,
          (v) => `${(v * 100).toFixed(2)} %`,
        )}]; ` +
        `memory PSS ${mean(of.map((c) => c.pssTotalMiB)).toFixed(0)} MiB ` +
        `[${split(
          (c) => c.pssMiB,
          (v) => `${v.toFixed(0)}`,
        )}], RSS ${mean(of.map((c) => c.rssTotalMiB)).toFixed(0)} MiB; ` +
        `WAN ${(mean(of.map((c) => c.wireBps)) / 1024).toFixed(2)} KiB/s ` +
        `[${split(
          (c) => c.protocolBps,
          (v) => `${(v / 1024).toFixed(2)}`,
        )} KiB/s]; ` +
        `libp2p connections ${mean(of.map((c) => c.connections)).toFixed(1)}`,
    )
  }
  const all = costs
  lines.push(
    `every host (${all.length}), mean: CPU ${(mean(all.map((c) => c.cpuTotal)) * 100).toFixed(2)} % of a core, ` +
      `WAN ${(mean(all.map((c) => c.wireBps)) / 1024).toFixed(2)} KiB/s, ` +
      `probes ${(mean(all.map((c) => c.protocolBps.probes ?? 0)) / 1024).toFixed(2)} KiB/s, ` +
      `dht ${(mean(all.map((c) => c.protocolBps.dht ?? 0)) / 1024).toFixed(2)} KiB/s, ` +
      `connections ${mean(all.map((c) => c.connections)).toFixed(1)}, ` +
      `cut as silent by liveness ${all.reduce((x, c) => x + c.silentCuts, 0)}; ` +
      `total PSS ${all.reduce((x, c) => x + c.pssTotalMiB, 0).toFixed(0)} MiB`,
  )
  return lines
}
