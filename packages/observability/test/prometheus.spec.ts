import assert from 'node:assert/strict'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import {
  dockerAvailable,
  freePort,
  type Proc,
  run,
  runToEnd,
  skipUnlessCi,
  startDaemon,
  stopAll,
  tempDir,
  waitFor,
} from '@mtc/testkit'
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml'
import {
  type JobName,
  loadDashboardQueries,
  PROMETHEUS_BIN,
  PROMETHEUS_YML,
  RULES_YML,
  requireBinary,
  substituteGrafanaMacros,
} from './deploy.ts'
import { COMPONENT_PREFIXES, exportedMetrics, type MetricType, usedMetrics } from './exported.ts'

/**
 * A small real mesh on loopback (ping-monitor, hl-service with its own etcd, a client
 * proxy, and an allocator when Docker answers) scraped by the real Prometheus binary with
 * a config derived from deploy/prometheus.yml (same jobs and rules, the test's ports).
 */

/** Scrape and rule evaluation interval of the test's Prometheus, so waits stay short. */
const SCRAPE_INTERVAL = '1s'
/** A daemon writes its --addr-file within ~1 s; hl-service starts etcd first (a few s). */
const DAEMON_START_TIMEOUT_MS = 30_000
/** The proxy's gateway listens right after its node starts. */
const GATEWAY_TIMEOUT_MS = 15_000
/** Prometheus opens an empty TSDB and loads the config in ~1 s; generous for a slow disk. */
const PROMETHEUS_READY_TIMEOUT_MS = 30_000
/**
 * Series and rule results: Prometheus hands new targets to its scrapers at most every
 * 5 s (its discovery manager's throttle), then needs a scrape or two at 1 s, rate() two
 * samples, and hl-service checks etcd every 5 s. 20 s leaves room for a loaded CI machine.
 */
const SERIES_TIMEOUT_MS = 20_000
/** Prometheus answers an API call on loopback in milliseconds. */
const API_TIMEOUT_MS = 5_000
/** Every peer the ping-monitor should see: hl-service and proxy, plus the allocator. */
const MESH_PEERS_WITHOUT_ALLOCATOR = 2

let dir: { path: string; remove: () => Promise<void> }
let prometheus: Proc | undefined
let promUrl = ''
let gatewayPort = 0
/** The metrics port of each component started, by job name. */
const targets = new Map<JobName, number>()
let withAllocator = false

async function api<T>(path: string): Promise<T> {
  const res = await fetch(`${promUrl}${path}`, { signal: AbortSignal.timeout(API_TIMEOUT_MS) })
  const body = (await res.json()) as { status: string; data: T; error?: string }
  if (body.status !== 'success') throw new Error(`${path}: ${body.error}`)
  return body.data
}

interface Sample {
  metric: Record<string, string>
  value: [number, string]
}

async function query(expr: string): Promise<Sample[]> {
  const data = await api<{ result: Sample[] }>(`/api/v1/query?query=${encodeURIComponent(expr)}`)
  return data.result
}

/** Waits until `expr` has a sample (one satisfying `ok` if given); returns its value. */
async function sampleValue(expr: string, ok: (v: number) => boolean = () => true): Promise<number> {
  let last: number | undefined
  return await waitFor(
    `a sample of ${expr}`,
    async () => {
      const r = await query(expr)
      last = r.length > 0 ? Number(r[0].value[1]) : undefined
      return last != null && ok(last) ? last : undefined
    },
    { timeoutMs: SERIES_TIMEOUT_MS, intervalMs: 250 },
  ).catch((err: Error) => {
    throw new Error(`${err.message} (last value: ${last})`)
  })
}

async function startMesh(): Promise<void> {
  const pskFile = join(dir.path, 'swarm.key')
  const keygen = await runToEnd('mtc-keygen', ['swarm-key', '--out', pskFile])
  assert.equal(keygen.code, 0, keygen.stderr)
  const overlay = ['--psk-file', pskFile, '--listen', '/ip4/127.0.0.1/tcp/0']
  const opts = { timeoutMs: DAEMON_START_TIMEOUT_MS }
  const metricsFlag = async (job: JobName) => {
    const port = await freePort()
    targets.set(job, port)
    return ['--metrics', `127.0.0.1:${port}`]
  }

  const pm = await startDaemon(
    'ping-monitor',
    [...overlay, ...(await metricsFlag('mtc-ping-monitor'))],
    dir.path,
    opts,
  )
  const joined = [...overlay, '--bootstrap', pm.addr]
  const hl = await startDaemon(
    'hl-service',
    [
      ...joined,
      ...(await metricsFlag('mtc-hl-service')),
      '--new-etcd-cluster',
      '--etcd-client-port',
      String(await freePort()),
      '--etcd-peer-port',
      String(await freePort()),
      '--data-dir',
      join(dir.path, 'hl-data'),
    ],
    dir.path,
    opts,
  )
  gatewayPort = await freePort()
  const proxy = await startDaemon(
    'proxy',
    [
      ...joined,
      ...(await metricsFlag('mtc-proxy')),
      '--hl',
      hl.addr,
      '--no-allocate',
      String(gatewayPort),
    ],
    dir.path,
    opts,
  )
  await waitFor(
    'the proxy gateway',
    async () => {
      if (proxy.proc.child.exitCode != null) throw new Error(`proxy exited: ${proxy.proc.stderr()}`)
      await fetch(`http://127.0.0.1:${gatewayPort}/`, { signal: AbortSignal.timeout(1000) })
      return true
    },
    { timeoutMs: GATEWAY_TIMEOUT_MS },
  )

  // An allocator runs instances in Docker: part of the mesh only where a daemon answers,
  // and always in CI (set-up starts one): there a missing daemon fails the suite.
  withAllocator = await dockerAvailable()
  const skipped = skipUnlessCi(withAllocator ? undefined : 'no Docker daemon answers')
  if (skipped != null) console.log(`# the allocator is left out of the mesh: ${skipped}`)
  if (withAllocator) {
    const first = 40000 + Math.floor(Math.random() * 200) * 100
    await startDaemon(
      'allocator',
      [
        ...joined,
        ...(await metricsFlag('mtc-allocator')),
        '--hl',
        hl.addr,
        '--host-ip',
        '127.0.0.1',
        '--port-range',
        `${first}-${first + 99}`,
        '--data-dir',
        join(dir.path, 'allocator-data'),
      ],
      dir.path,
      opts,
    )
  }
}

/** deploy/prometheus.yml with the test's interval, ports and an absolute rules path. */
async function writePrometheusConfig(): Promise<string> {
  const config = parseYaml(await readFile(PROMETHEUS_YML, 'utf8')) as {
    global: Record<string, string>
    rule_files: string[]
    scrape_configs: { job_name: JobName; static_configs: { targets: string[] }[] }[]
  }
  config.global.scrape_interval = SCRAPE_INTERVAL
  config.global.scrape_timeout = SCRAPE_INTERVAL
  config.global.evaluation_interval = SCRAPE_INTERVAL
  assert.deepEqual(config.rule_files, ['rules.yml'])
  config.rule_files = [RULES_YML]
  config.scrape_configs = config.scrape_configs.filter((s) => targets.has(s.job_name))
  for (const s of config.scrape_configs) {
    s.static_configs = [{ targets: [`127.0.0.1:${targets.get(s.job_name)}`] }]
  }
  assert.equal(config.scrape_configs.length, targets.size, 'a component has no job')
  const file = join(dir.path, 'prometheus.yml')
  await writeFile(file, stringifyYaml(config))
  return file
}

async function startPrometheus(configFile: string): Promise<void> {
  const port = await freePort()
  promUrl = `http://127.0.0.1:${port}`
  const proc = run(requireBinary(PROMETHEUS_BIN), [
    `--config.file=${configFile}`,
    `--storage.tsdb.path=${join(dir.path, 'tsdb')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--log.level=warn',
  ])
  prometheus = proc
  await waitFor(
    'Prometheus ready',
    async () => {
      if (proc.child.exitCode != null) throw new Error(`prometheus exited: ${proc.stderr()}`)
      const res = await fetch(`${promUrl}/-/ready`, { signal: AbortSignal.timeout(1000) })
      return res.status === 200
    },
    { timeoutMs: PROMETHEUS_READY_TIMEOUT_MS, intervalMs: 200 },
  ).catch((err: Error) => {
    throw new Error(`${err.message}\n${proc.stderr()}`)
  })
}

before(async () => {
  dir = await tempDir('mtc-prometheus-')
  await startMesh()
  await startPrometheus(await writePrometheusConfig())
})

after(async () => {
  await prometheus?.stop()
  await stopAll()
  await dir?.remove()
})

describe('Prometheus with deploy/prometheus.yml on a live mesh', () => {
  it('scrapes every component under its job name, all up', async () => {
    interface Target {
      labels: { job: string }
      health: string
      lastError: string
    }
    const expected = [...targets.keys()].sort()
    const active = await waitFor(
      'every target up',
      async () => {
        const { activeTargets } = await api<{ activeTargets: Target[] }>('/api/v1/targets')
        const down = activeTargets.filter((t) => t.health !== 'up')
        if (down.length > 0) {
          throw new Error(down.map((t) => `${t.labels.job} ${t.health} ${t.lastError}`).join('; '))
        }
        return activeTargets.length === targets.size ? activeTargets : undefined
      },
      { timeoutMs: SERIES_TIMEOUT_MS, intervalMs: 250 },
    )
    assert.deepEqual(active.map((t) => t.labels.job).sort(), expected)
    assert.ok(expected.length >= 3 && (!withAllocator || expected.includes('mtc-allocator')))
  })

  it('has the mesh’s key series', async () => {
    assert.equal(await sampleValue('up{job="mtc-proxy"}'), 1)
    assert.equal(await sampleValue('up{job="mtc-hl-service"}'), 1)
    const peers = MESH_PEERS_WITHOUT_ALLOCATOR + (withAllocator ? 1 : 0)
    await sampleValue('mtc_ping_monitor_connected_peers{job="mtc-ping-monitor"}', (v) => v >= peers)
    // etcd is checked every 5 s, so the first scrapes may still see 0.
    await sampleValue('mtc_hl_etcd_up{job="mtc-hl-service"}', (v) => v === 1)
    const roles = (await query('mtc_ping_monitor_peer_rtt_smoothed_seconds')).map(
      (s) => s.metric.role,
    )
    assert.ok(roles.length >= peers, `RTT series for ${roles.join(', ')}`)
    if (withAllocator) assert.equal(await sampleValue('up{job="mtc-allocator"}'), 1)
  })

  it('knows, from the live targets, every metric the dashboards use for them', async () => {
    // prom-client writes # HELP/# TYPE even for a metric without samples yet, and
    // Prometheus keeps that metadata per target: every family a running daemon exports.
    const exported = await exportedMetrics()
    const used = usedMetrics(await loadDashboardQueries(), exported)
    const prefixes = [...targets.keys()].map((job) => COMPONENT_PREFIXES[job])
    const expected = [...used].filter((n) => prefixes.some((p) => n.startsWith(p))).sort()
    assert.ok(expected.length > 0)
    const metadata = await waitFor(
      'metadata of the dashboard metrics',
      async () => {
        const md = await api<Record<string, { type: MetricType }[]>>('/api/v1/metadata')
        const missing = expected.filter((n) => md[n] == null)
        if (missing.length > 0) throw new Error(`no metadata for ${missing.join(', ')}`)
        return md
      },
      { timeoutMs: SERIES_TIMEOUT_MS, intervalMs: 250 },
    )
    for (const n of expected) assert.equal(metadata[n][0].type, exported.get(n), n)
  })

  it('records the gateway’s traffic as golden signals', async () => {
    const get = async () => {
      const res = await fetch(`http://127.0.0.1:${gatewayPort}/no-such-service/`, {
        signal: AbortSignal.timeout(API_TIMEOUT_MS),
      })
      await res.arrayBuffer()
      return res.status
    }
    const status = await get()
    assert.ok(status >= 400, `an unknown service answered ${status}`)
    const code = String(status)
    const requests = `sum(mtc_proxy_requests_total{job="mtc-proxy", code="${code}"})`
    await sampleValue(requests, (v) => v >= 1)
    // A counter's first sample is rate()'s baseline: only a later increase makes a rate.
    assert.equal(await get(), status)
    await sampleValue(requests, (v) => v >= 2)
    await sampleValue(
      'sum(mtc_proxy_request_duration_seconds_count{job="mtc-proxy"})',
      (v) => v >= 2,
    )
    await sampleValue(`sum(service_code:mtc_proxy_requests:rate1m{code="${code}"})`, (v) => v > 0)
  })

  it('evaluates every recording rule without an error', async () => {
    interface Rule {
      name: string
      health: string
      lastError?: string
    }
    const rules = await waitFor(
      'every rule evaluated',
      async () => {
        const { groups } = await api<{ groups: { rules: Rule[] }[] }>('/api/v1/rules')
        const all = groups.flatMap((g) => g.rules)
        return all.length > 0 && all.every((r) => r.health !== 'unknown') ? all : undefined
      },
      { timeoutMs: SERIES_TIMEOUT_MS, intervalMs: 250 },
    )
    assert.deepEqual(
      rules.filter((r) => r.health !== 'ok').map((r) => `${r.name}: ${r.lastError}`),
      [],
    )
    // The ping-monitor probes every peer each second: the RTT percentile has data.
    await sampleValue('job:mtc_ping_monitor_probe_rtt_seconds:p99_1m', (v) => v > 0)
  })

  it('runs every dashboard query', async () => {
    const failed: string[] = []
    for (const q of await loadDashboardQueries()) {
      // Grafana's substitution: macros become durations, $service (All) becomes .*
      const expr = substituteGrafanaMacros(q.expr).replaceAll('$service', '.*')
      await query(expr).catch((err: Error) => failed.push(`${q.where}: ${err.message}`))
    }
    assert.deepEqual(failed, [])
  })
})
