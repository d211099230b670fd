import assert from 'node:assert/strict'
import { readFile, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import {
  docker,
  dockerAvailable,
  ensureImages,
  freePort,
  IMAGE_BUILD_TIMEOUT_MS,
  type LaunchedDaemon,
  LocalMesh,
  type Proc,
  removeContainers,
  run,
  runToEnd,
  skipUnlessCi,
  startDaemon,
  stopAll,
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
 * proxy, a service-mode proxy that joins once Prometheus runs, and where Docker answers
 * an allocator and an instance container of mtc/hello-world-server) scraped by the real Prometheus binary with deploy/prometheus.yml, in
 * which only the bootstrap's address changes: every target comes from its /sd.
 */

/** Scrape and rule evaluation interval of the test's Prometheus, so waits stay short. */
const SCRAPE_INTERVAL = '1s'
/** A daemon writes its --addr-file within ~1 s; hl-service starts etcd first (a few s). */
const DAEMON_START_TIMEOUT_MS = 30_000
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

/** The mesh's daemons and its directory (swarm key, data, Prometheus's files). */
let mesh: LocalMesh
let dir: { path: string }
let prometheus: Proc | undefined
let promUrl = ''
let gatewayPort = 0
/** The metrics port of each component started, by job name. */
const targets = new Map<JobName, number>()
let withAllocator = false
let bootstrapAddr = ''
/** The service-mode proxy (METRICS_PORT set, as the allocator starts it) and its service. */
const SERVICE = 'hello'
let serviceProxy: { proc: Proc; metricsPort: number } | undefined
let serviceBackend: Server | undefined
/** Where Docker answers: an instance container as the allocator runs one, and its label. */
const CONTAINER_LABEL = 'mtc.test=observability'
const CONTAINER_SERVICE = 'hello-world-server'
let containerMetricsPort: number | undefined

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
  const started = (job: JobName, d: LaunchedDaemon) => {
    targets.set(job, d.metricsPort as number)
    return d
  }
  const pm = started('mtc-ping-monitor', await mesh.startBootstrap())
  bootstrapAddr = pm.addr
  started('mtc-hl-service', await mesh.startHlService())
  gatewayPort = await freePort()
  started('mtc-proxy', await mesh.startProxy([String(gatewayPort)], ['--no-allocate']))

  // An allocator runs instances in Docker: part of the mesh only where a daemon answers,
  // and always in CI (set-up starts one): there a missing daemon fails the suite.
  withAllocator = await dockerAvailable()
  const skipped = skipUnlessCi(withAllocator ? undefined : 'no Docker daemon answers')
  if (skipped != null) console.log(`# the allocator is left out of the mesh: ${skipped}`)
  if (withAllocator) {
    const first = 40000 + Math.floor(Math.random() * 200) * 100
    const range = ['--port-range', `${first}-${first + 99}`]
    started('mtc-allocator', await mesh.startAllocator(range))
  }
}

/**
 * A service-mode proxy as the allocator starts one in a container (METRICS_PORT, so its
 * metrics listen on every interface and the bootstrap names the address it sees), in
 * front of a plain HTTP server.
 */
async function startServiceProxy(): Promise<void> {
  const backend = createServer((_req, res) => res.end('hello\n'))
  serviceBackend = backend
  await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve))
  const backendPort = (backend.address() as { port: number }).port
  const metricsPort = await freePort()
  const proxy = await startDaemon(
    'proxy',
    [
      '--psk-file',
      mesh.pskFile,
      '--listen',
      '/ip4/127.0.0.1/tcp/0',
      '--bootstrap',
      bootstrapAddr,
      '--no-allocate',
      String(await freePort()),
      SERVICE,
      `127.0.0.1:${backendPort}`,
    ],
    dir.path,
    { env: { METRICS_PORT: String(metricsPort) }, timeoutMs: DAEMON_START_TIMEOUT_MS },
  )
  serviceProxy = { proc: proxy.proc, metricsPort }
}

/**
 * An instance of mtc/hello-world-server in Docker, started as the allocator starts one
 * (host network, its environment, the swarm key and an identity mounted): its proxy
 * serves metrics on METRICS_PORT.
 */
async function startInstanceContainer(): Promise<void> {
  await ensureImages()
  await removeContainers(CONTAINER_LABEL)
  const identity = join(dir.path, 'instance.key')
  const keygen = await runToEnd('mtc-keygen', ['identity', '--key-file', identity])
  assert.equal(keygen.code, 0, keygen.stderr)
  const [proxyPort, servicePort, metricsPort, p2pPort] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ]
  const env = {
    SERVICE_NAME: CONTAINER_SERVICE,
    PROXY_IP: '127.0.0.1',
    PROXY_PORT: String(proxyPort),
    SERVICE_PORT: String(servicePort),
    METRICS_PORT: String(metricsPort),
    P2P_PORT: String(p2pPort),
    P2P_BOOTSTRAPS: bootstrapAddr,
  }
  const args = ['run', '-d', '--label', CONTAINER_LABEL, '--network', 'host']
  // As the allocator runs instances (the entrypoint refuses to start otherwise).
  args.push('--security-opt', 'no-new-privileges')
  for (const [k, v] of Object.entries(env)) args.push('-e', `${k}=${v}`)
  args.push('-v', `${mesh.pskFile}:/run/mtc/swarm.key:ro`)
  args.push('-v', `${identity}:/run/mtc/identity.key:ro`)
  await docker([...args, 'mtc/hello-world-server:1.0'])
  containerMetricsPort = metricsPort
}

/**
 * deploy/prometheus.yml with the test's interval and an absolute rules path; of the
 * targets, only the bootstrap's address is given (its /sd lists the rest).
 */
async function writePrometheusConfig(): Promise<string> {
  const config = parseYaml(await readFile(PROMETHEUS_YML, 'utf8')) as {
    global: Record<string, string>
    rule_files: string[]
    scrape_configs: {
      job_name: string
      http_sd_configs: { url: string; refresh_interval?: string }[]
    }[]
  }
  config.global.scrape_interval = SCRAPE_INTERVAL
  config.global.scrape_timeout = SCRAPE_INTERVAL
  config.global.evaluation_interval = SCRAPE_INTERVAL
  assert.deepEqual(config.rule_files, ['rules.yml'])
  config.rule_files = [RULES_YML]
  assert.equal(config.scrape_configs.length, 1, 'one job, discovered through the bootstrap')
  const [sd] = config.scrape_configs[0].http_sd_configs
  assert.equal(new URL(sd.url).pathname, '/sd')
  sd.url = `http://127.0.0.1:${targets.get('mtc-ping-monitor')}/sd`
  sd.refresh_interval = SCRAPE_INTERVAL
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

before(
  async () => {
    mesh = await LocalMesh.create({ prefix: 'mtc-prometheus-' })
    dir = { path: mesh.dir }
    await startMesh()
    await startPrometheus(await writePrometheusConfig())
    // Join once Prometheus runs: found with no change to its configuration.
    await startServiceProxy()
    if (withAllocator) await startInstanceContainer()
  },
  { timeout: IMAGE_BUILD_TIMEOUT_MS + 120_000 },
)

after(async () => {
  if (withAllocator) await removeContainers(CONTAINER_LABEL).catch(() => {})
  await prometheus?.stop()
  await new Promise((resolve) => serviceBackend?.close(resolve) ?? resolve(undefined))
  await mesh?.stop()
  await stopAll()
})

interface Target {
  labels: Record<string, string>
  scrapeUrl: string
  health: string
  lastError: string
}

/** `job port [service]` of each target, and the labels the bootstrap gave it. */
function describeTarget(t: Target): string {
  const { job, mtc_role, mtc_peer_id, mtc_host, mtc_service } = t.labels
  assert.equal(job, `mtc-${mtc_role}`, t.scrapeUrl)
  assert.match(mtc_peer_id ?? '', /^12D3KooW/, t.scrapeUrl)
  assert.equal(mtc_host, '127.0.0.1', t.scrapeUrl)
  return [job, new URL(t.scrapeUrl).port, mtc_service].filter((x) => x != null).join(' ')
}

describe('Prometheus with deploy/prometheus.yml on a live mesh', () => {
  it('finds every component through the bootstrap and scrapes it under its job name, all up', async () => {
    const expected = [
      ...[...targets].map(([job, port]) => `${job} ${port}`),
      `mtc-proxy ${serviceProxy?.metricsPort} ${SERVICE}`,
      ...(containerMetricsPort != null
        ? [`mtc-proxy ${containerMetricsPort} ${CONTAINER_SERVICE}`]
        : []),
    ].sort()
    let seen: string[] = []
    await waitFor(
      'every target discovered and up',
      async () => {
        const { activeTargets } = await api<{ activeTargets: Target[] }>('/api/v1/targets')
        seen = activeTargets.map((t) => `${describeTarget(t)} ${t.health} ${t.lastError}`)
        const up = activeTargets
          .filter((t) => t.health === 'up')
          .map(describeTarget)
          .sort()
        return up.length === expected.length ? up : undefined
      },
      { timeoutMs: SERIES_TIMEOUT_MS, intervalMs: 250 },
    ).then(
      (up) => assert.deepEqual(up, expected),
      async (err: Error) => {
        const containers = withAllocator
          ? (await docker(['ps', '-a', '--filter', `label=${CONTAINER_LABEL}`])).stdout
          : ''
        throw new Error(`${err.message}; targets: ${seen.join('; ')}\n${containers}`)
      },
    )
    assert.ok(targets.size >= 3 && (!withAllocator || targets.has('mtc-allocator')))
  })

  it('the bootstrap’s status API shows the service instances and the allocator’s load', async () => {
    interface Status {
      services: { name: string; instances: { host: string }[] }[]
      allocators: { running: number; maxInstances: number }[]
    }
    const url = `http://127.0.0.1:${targets.get('mtc-ping-monitor')}/api/status`
    const doc = await waitFor(
      'services and allocators in /api/status',
      async () => {
        const d = (await (await fetch(url)).json()) as Status
        const names = d.services.map((s) => s.name)
        const ok =
          names.includes(SERVICE) &&
          (!withAllocator || (names.includes(CONTAINER_SERVICE) && d.allocators.length === 1))
        return ok ? d : undefined
      },
      { timeoutMs: SERIES_TIMEOUT_MS, intervalMs: 250 },
    )
    assert.equal(doc.services.find((s) => s.name === SERVICE)?.instances[0].host, '127.0.0.1')
    if (withAllocator) assert.ok(doc.allocators[0].maxInstances > 0)
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

  it('drops a departed instance from its targets', async () => {
    const port = String(serviceProxy?.metricsPort)
    assert.equal(await serviceProxy?.proc.stop(), 0)
    await waitFor(
      'the stopped service-mode proxy gone from the targets',
      async () => {
        const { activeTargets } = await api<{ activeTargets: Target[] }>('/api/v1/targets')
        return !activeTargets.some((t) => new URL(t.scrapeUrl).port === port)
      },
      { timeoutMs: SERIES_TIMEOUT_MS, intervalMs: 250 },
    )
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
