import { Registry } from 'prom-client'
// The components' own metric definitions, from their sources (not a copy of the names):
// the classes each daemon registers on the registry its /metrics serves.
import { AllocatorMetrics } from '../../allocator/src/daemon/metrics.ts'
import { HashLookupMetrics } from '../../hash-lookup/src/daemon/metrics.ts'
import { PingMonitor, type PingMonitorInit } from '../../ping-monitor/src/monitor.ts'
import { ProxyMetrics } from '../../proxy/src/metrics.ts'
import { metricNames, type Query } from './deploy.ts'

type PingMonitorNode = ConstructorParameters<typeof PingMonitor>[0]

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary'

/** Which component's metrics a name belongs to, by its prefix. */
export const COMPONENT_PREFIXES = {
  'mtc-ping-monitor': 'mtc_ping_monitor_',
  'mtc-allocator': 'mtc_allocator_',
  'mtc-hl-service': 'mtc_hl_',
  'mtc-proxy': 'mtc_proxy_',
} as const

/**
 * Every `mtc_*` metric the components export, with its type: the metric classes
 * registered on a fresh registry, as each daemon does. The ping-monitor's gauges live in
 * `PingMonitor`, whose constructor only keeps the node for its collect callbacks.
 */
export async function exportedMetrics(): Promise<Map<string, MetricType>> {
  const registry = new Registry()
  new HashLookupMetrics(registry)
  new AllocatorMetrics(registry, { running: () => 0, starting: () => 0, cacheBytes: async () => 0 })
  new ProxyMetrics(registry)
  const node = { libp2p: { getPeers: () => [] } } as unknown as PingMonitorNode
  new PingMonitor(node, { registry, log: (() => {}) as unknown as PingMonitorInit['log'] })
  const out = new Map<string, MetricType>()
  for (const m of await registry.getMetricsAsJSON()) out.set(m.name, String(m.type) as MetricType)
  return out
}

/** Names Prometheus itself adds to every target's series. */
export const PROMETHEUS_SYNTHETIC = new Set([
  'up',
  'scrape_duration_seconds',
  'scrape_samples_scraped',
  'scrape_samples_post_metric_relabeling',
  'scrape_series_added',
])

/**
 * The exported metric a referenced series name belongs to: itself, or for a histogram
 * (or summary) series `_bucket`/`_sum`/`_count`, the metric it is part of.
 */
export function exportingMetric(
  name: string,
  exported: Map<string, MetricType>,
): string | undefined {
  if (exported.has(name)) return name
  const m = /^(.+)_(bucket|sum|count)$/.exec(name)
  if (m == null) return undefined
  const type = exported.get(m[1])
  if (type === 'histogram' || (type === 'summary' && m[2] !== 'bucket')) return m[1]
  return undefined
}

/** The exported metrics `queries` select (a histogram's series count as the histogram). */
export function usedMetrics(queries: Query[], exported: Map<string, MetricType>): Set<string> {
  const used = new Set<string>()
  for (const q of queries) {
    for (const n of metricNames(q.expr)) {
      const m = exportingMetric(n, exported)
      if (m != null) used.add(m)
    }
  }
  return used
}
