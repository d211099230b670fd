import assert from 'node:assert/strict'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { formatSwarmKey, generatePsk, loadOrCreateKey } from '@mtc/p2pnode'
import { metricValue, type Proc, readLinesWhenReady, waitFor } from '@mtc/testkit'
import {
  type HttpAnswer,
  type Instance,
  Mesh,
  type MeshSpec,
  metricSum,
  rttWithinTolerance,
} from '../src/index.ts'
import { allocateOn, findPeerFrom, fourHosts, missing, summary } from './scenario-helpers.ts'

/**
 * Latency scenarios of issue #6 on one mesh: the issue's four hosts (client; near 5 ms,
 * far 40 ms, registry 10 ms from it) plus an outsider with another PSK. Order matters and
 * is kept safe: the soft-limit scenario runs while every link is as configured (it needs
 * near to be the nearest allocator), the latency-choice scenario restores the one link it
 * degrades in `finally`, and Prometheus scrapes the bootstrap from the start, so the last
 * scenario has the whole run's samples.
 */
const skip = missing()

/** No soft limit: the choice among running instances, with no allocation on the side. */
const CHOICE = 'hello-world-server'
/** Soft 20 ms: far (40) is above it, near (5, read 7–10 under load) well below. */
const SOFT = 'hello-soft'
const SOFT_RTT_MS = 20
/** Far enough for the degraded near host (80 ms) to stay usable. */
const HARD_RTT_MS = 200
const DEGRADED_RTT_MS = 80

/** The bootstrap's probe interval here (the mesh default, 10 s, gives too few samples). */
const PING_INTERVAL = '1s'

/** A host with a node of another PSK (the isolation scenario). */
const OUTSIDER = 'outsider'
const topology = fourHosts()
topology.hosts.push(OUTSIDER)
topology.rtt = { ...topology.rtt, 'outsider-registry': 10 }

const SPEC: MeshSpec = {
  topology,
  registry: 'registry',
  allocators: ['near', 'far'],
  clients: ['client'],
  // The Prometheus scenario compares a low quantile of the bootstrap's probes: many of them.
  pingInterval: PING_INTERVAL,
  services: [
    { name: CHOICE, hardRttMs: HARD_RTT_MS },
    // The same image under a second name; every dockerd has it preloaded.
    { name: SOFT, softRttMs: SOFT_RTT_MS, hardRttMs: HARD_RTT_MS, upload: false },
  ],
}

/** Requests per batch while watching traffic move, and the sliding window judged. */
const BATCH = 5
const WINDOW = 20
/** "Goes to X": at least this share of the window (or of a measured run). */
const SHARE = 0.95
/** A move is due within (printed either way); the loops give up a little later. */
const CHOICE_MOVE_BOUND_MS = 10_000
/** Includes starting the nearer instance: ~2–5 s here, more on a loaded machine. */
const SOFT_MOVE_BOUND_MS = 30_000
const WATCH_LIMIT_MS = 45_000
/** Requests counted once traffic settled (before the degradation, after a move). */
const MEASURED = 60
/** The proxy selector's OBSERVATION_DECAY_MS: how long a latency spike weighs. */
const SELECTOR_DECAY_MS = 10_000

/** Prometheus (Debian package) in the registry host, scraping the bootstrap every second. */
const PROMETHEUS_BIN = '/usr/bin/prometheus'
const PROMETHEUS_URL = 'http://127.0.0.1:9090'
const BOOTSTRAP_METRICS = '127.0.0.1:9100'
/**
 * Judged: the 10th percentile over the whole run. A probe also holds the JS stack's own
 * time (~1 ms idle; the lower quartile reads 2.5–3 ms above the path on these 2 busy cores
 * while containers start), which a low quantile mostly leaves out; one slow sample cannot
 * pass it, nor a gauge that is wrong most of the time.
 */
const LOW_QUANTILE = 0.1
/** At a 1 s probe and scrape interval: 30 probes at least per judged peer. */
const MIN_SCRAPES = 30
/** How long the outsider is watched at least, and at most for its failed handshakes. */
const ISOLATION_MIN_MS = 8_000
const ISOLATION_MAX_MS = 40_000

/** Requests of one batch, by the host of the instance that answered. */
interface Batch {
  /** ms since the watch began, when the batch's first request was sent. */
  startedAt: number
  /** ms since the watch began, when the batch ended. */
  at: number
  byHost: Map<string, number>
  answers: HttpAnswer[]
}

/**
 * Which instance answered each batch of requests: the instances' inbound counters are read
 * after every batch (a full listing only when an unknown instance answered), lighter than
 * `tracedRequests` so a watch sees a move with sub-second resolution.
 */
class Tracer {
  private known: Instance[] = []
  private counts = new Map<string, number>()

  private readonly mesh: Mesh
  private readonly service: string

  constructor(mesh: Mesh, service: string) {
    this.mesh = mesh
    this.service = service
  }

  async start(): Promise<void> {
    await this.relist()
  }

  private async relist(): Promise<Map<string, number>> {
    this.known = await this.mesh.instances(this.service)
    return await this.read()
  }

  private async read(): Promise<Map<string, number>> {
    const texts = await Promise.all(
      this.known.map((i) => this.mesh.instanceMetrics(i).catch(() => '')),
    )
    return new Map(
      this.known.map((i, k) => [i.peerId, metricSum(texts[k], 'mtc_proxy_inbound_requests_total')]),
    )
  }

  async batch(count: number, since: number): Promise<Batch> {
    const startedAt = performance.now() - since
    const answers = await this.mesh.requests(`/${this.service}/`, count)
    const at = performance.now() - since
    let now = await this.read()
    const delta = () => [...now].reduce((s, [p, c]) => s + c - (this.counts.get(p) ?? 0), 0)
    if (delta() < answers.filter((a) => a.status === 200).length) now = await this.relist()
    const byHost = new Map<string, number>()
    for (const i of this.known) {
      const d = (now.get(i.peerId) ?? 0) - (this.counts.get(i.peerId) ?? 0)
      if (d > 0) byHost.set(i.host, (byHost.get(i.host) ?? 0) + d)
    }
    this.counts = now
    return { startedAt, at, byHost, answers }
  }
}

function share(batches: Batch[], host: string): { to: number; of: number } {
  let to = 0
  let of = 0
  for (const b of batches) {
    to += b.byHost.get(host) ?? 0
    for (const n of b.byHost.values()) of += n
  }
  return { to, of }
}

function pct({ to, of }: { to: number; of: number }): string {
  return `${to}/${of} (${of === 0 ? '-' : ((100 * to) / of).toFixed(1)} %)`
}

function failures(batches: Batch[]): HttpAnswer[] {
  return batches.flatMap((b) => b.answers).filter((a) => a.status !== 200)
}

/**
 * Sends batches until the last WINDOW requests went to `host` at SHARE or more (or the
 * limit passes): returns every batch, and when traffic had moved: when the first batch of
 * that window was sent. (Not when the window was complete: the harness's own time to send
 * and trace the window, seconds on a busy machine, is not the proxy's.)
 */
async function watchMove(
  tracer: Tracer,
  host: string,
): Promise<{ batches: Batch[]; movedMs?: number }> {
  const since = performance.now()
  const batches: Batch[] = []
  const perWindow = Math.ceil(WINDOW / BATCH)
  for (let i = 0; i < 1_000 && performance.now() - since < WATCH_LIMIT_MS; i++) {
    batches.push(await tracer.batch(BATCH, since))
    const window = batches.slice(-perWindow)
    const s = share(window, host)
    if (window.length === perWindow && s.of >= WINDOW * SHARE && s.to >= s.of * SHARE) {
      return { batches, movedMs: window[0].startedAt }
    }
  }
  return { batches }
}

/** Traffic for one selector decay time, so that what one spike taught has faded. */
async function settle(tracer: Tracer, into: Batch[]): Promise<void> {
  const until = performance.now() + SELECTOR_DECAY_MS
  while (performance.now() < until) into.push(await tracer.batch(BATCH, performance.now()))
}

/**
 * Settled traffic: MEASURED requests in batches of 10, and the share that went to `host`.
 * One slow answer from `host` (a pause on a busy host) counts at once in the selector's
 * peak-EWMA and keeps traffic elsewhere for about one decay time (CI23 `N10 | N2F8 | F10 |
 * F10`, the CI of d5c3917 `N10 | N10 | N2F8 | F10`), as Finagle's and Linkerd's would: a
 * window below SHARE is measured once more after one more decay time, and that one is
 * judged. `all` holds every batch sent; `retried` the first window's timeline when it was.
 */
async function measure(
  tracer: Tracer,
  host: string,
): Promise<{
  batches: Batch[]
  share: { to: number; of: number }
  all: Batch[]
  retried?: string
}> {
  const all: Batch[] = []
  const window = async () => {
    const batches: Batch[] = []
    for (let i = 0; i < MEASURED / 10; i++) batches.push(await tracer.batch(10, performance.now()))
    all.push(...batches)
    return { batches, share: share(batches, host) }
  }
  const first = await window()
  if (first.share.to >= SHARE * MEASURED) return { ...first, all }
  await settle(tracer, all)
  return { ...(await window()), all, retried: `${pct(first.share)} (${timeline(first.batches)})` }
}

function where(batches: Batch[]): string {
  const all = new Map<string, number>()
  for (const b of batches) for (const [h, n] of b.byHost) all.set(h, (all.get(h) ?? 0) + n)
  return [...all].map(([h, n]) => `${n} to ${h}`).join(', ')
}

/** Per batch: seconds into the watch and where its requests went (N near, F far). */
function timeline(batches: Batch[]): string {
  return batches
    .map(
      (b) =>
        `${(b.at / 1000).toFixed(1)}s ${[...b.byHost]
          .map(([h, n]) => `${h[0].toUpperCase()}${n}`)
          .join('')}`,
    )
    .join(' | ')
}

/** The client proxy's smoothed probe RTT to an instance, in ms (its own view). */
async function proxyRtt(mesh: Mesh, service: string, peerId: string): Promise<string> {
  const s = await mesh.metric('client', 'proxy', 'mtc_proxy_upstream_rtt_seconds', {
    service,
    instance: peerId,
  })
  return s == null ? '?' : (s * 1000).toFixed(1)
}

/** A Prometheus instant query from inside the registry host. */
async function promQuery(
  mesh: Mesh,
  expr: string,
): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>> {
  const url = `${PROMETHEUS_URL}/api/v1/query?query=${encodeURIComponent(expr)}`
  const r = await mesh.topo.httpGet(SPEC.registry, url)
  const body = JSON.parse(r.body) as { status: string; data: { result: [] }; error?: string }
  if (body.status !== 'success') throw new Error(`${expr}: ${body.error ?? r.body}`)
  return body.data.result
}

describe('scenarios: latency on a simulated WAN', { skip, timeout: 300_000 }, () => {
  let mesh: Mesh
  let prometheus: Proc | undefined
  /**
   * The outsider's identity, made before any test (the isolation test runs it): the
   * Prometheus scenario checks it never showed up, whichever tests ran before.
   */
  let outsiderPeer = ''

  before(async () => {
    mesh = await Mesh.start(SPEC)
    await mkdir(join(mesh.dir, OUTSIDER), { recursive: true, mode: 0o700 })
    outsiderPeer = (
      await loadOrCreateKey(join(mesh.dir, OUTSIDER, 'identity.key'))
    ).publicKey.toString()
    console.log(`mesh up: ${JSON.stringify(mesh.timings)} (ms after start)`)
    // Started first so the Prometheus scenario has samples of the whole run.
    const dir = join(mesh.dir, SPEC.registry, 'prometheus')
    const config = {
      global: { scrape_interval: '1s', scrape_timeout: '1s' },
      scrape_configs: [
        { job_name: 'mtc-ping-monitor', static_configs: [{ targets: [BOOTSTRAP_METRICS] }] },
      ],
    }
    await writeFile(`${dir}.yml`, JSON.stringify(config)) // JSON is YAML
    prometheus = mesh.topo.spawn(SPEC.registry, PROMETHEUS_BIN, [
      `--config.file=${dir}.yml`,
      `--storage.tsdb.path=${dir}`,
      `--web.listen-address=${new URL(PROMETHEUS_URL).host}`,
      '--log.level=warn',
    ])
    const proc = prometheus
    await waitFor(
      'Prometheus ready in the registry host',
      async () => {
        if (proc.child.exitCode != null) throw new Error(`prometheus exited: ${proc.stderr()}`)
        return (await mesh.topo.httpGet(SPEC.registry, `${PROMETHEUS_URL}/-/ready`)).status === 200
      },
      { timeoutMs: 30_000, intervalMs: 250 },
    ).catch((err: Error) => {
      throw new Error(`${err.message} (${PROMETHEUS_BIN}: scripts/setup.sh)\n${proc.stderr()}`)
    })
  })

  after(async () => {
    await prometheus?.stop()
    await mesh?.destroy()
  })

  it('soft limit: with only a far instance, the proxy starts a nearer one and traffic moves to it', async () => {
    const far = await allocateOn(mesh, 'far', SOFT, 'client')
    assert.deepEqual(
      (await mesh.instances(SOFT)).map((i) => [i.host, i.peerId]),
      [['far', far.peerId]],
    )
    const tracer = new Tracer(mesh, SOFT)
    await tracer.start()
    const { batches, movedMs } = await watchMove(tracer, 'near')
    const log = () => `${where(batches)}\n${mesh.log('client', 'proxy')}`
    // The proxy began on the far instance (the one it found), so it was the soft limit
    // that had a nearer one started, not a lookup that came back empty.
    assert.ok((batches[0].byHost.get('far') ?? 0) > 0, `first batch: ${where([batches[0]])}`)
    assert.ok(movedMs != null, `traffic did not move to near in ${WATCH_LIMIT_MS} ms: ${log()}`)
    const after = await measure(tracer, 'near')

    const near = await mesh.containers('near', { service: SOFT })
    assert.equal(near.length, 1, `instances on near: ${near.length}`)
    assert.equal(near[0].allocator, mesh.peerId('near', 'allocator'))
    const allocations = await mesh.metric('client', 'proxy', 'mtc_proxy_allocations_total', {
      service: SOFT,
      result: 'ok',
    })
    if (after.retried)
      console.log(`soft-limit: first window afterwards ${after.retried}, measured again`)
    const sent = [...batches, ...after.all]
    const failed = failures(sent)
    const total = sent.reduce((s, b) => s + b.answers.length, 0)
    console.log(
      [
        `soft-limit: soft ${SOFT_RTT_MS} ms, far instance at ${mesh.topo.rtt('client', 'far')} ms; near allocator at ${mesh.topo.rtt('client', 'near')} ms`,
        `soft-limit: time until ${SHARE * 100} % of a ${WINDOW}-request window went to the new near instance: ${(movedMs / 1000).toFixed(1)} s (${batches.length} batches of ${BATCH}: ${where(batches)})`,
        `soft-limit: share to near afterwards: ${pct(after.share)}, ${summary(after.batches.flatMap((b) => b.answers))}`,
        `soft-limit: the proxy's RTT to the near instance ${await proxyRtt(mesh, SOFT, near[0]?.peerId ?? '')} ms, to the far one ${await proxyRtt(mesh, SOFT, far.peerId)} ms`,
        `soft-limit: timeline ${timeline(batches)}`,
        `soft-limit: afterwards ${timeline(after.batches)}`,
        `soft-limit: nearer instances started by the proxy: ${allocations ?? 0}`,
        `soft-limit: requests failed: ${failed.length}/${total}`,
      ].join('\n'),
    )
    assert.ok(movedMs <= SOFT_MOVE_BOUND_MS, `moved after ${movedMs} ms`)
    assert.ok(after.share.to >= SHARE * MEASURED, `afterwards: ${pct(after.share)}`)
    assert.equal(allocations, 1, 'one nearer instance, asked once')
    assert.deepEqual(failed, [], 'every request answered 200')
  })

  it('latency choice: near gets the traffic, and loses it within seconds once its link degrades', async () => {
    const [near, far] = await Promise.all([
      allocateOn(mesh, 'near', CHOICE, 'client'),
      allocateOn(mesh, 'far', CHOICE, 'client'),
    ])
    const tracer = new Tracer(mesh, CHOICE)
    await tracer.start()
    // Warm-up: until the client proxy has probed both instances.
    const rtt = (peer: string) =>
      mesh.metric('client', 'proxy', 'mtc_proxy_upstream_rtt_seconds', {
        service: CHOICE,
        instance: peer,
      })
    const warm: Batch[] = []
    await waitFor(
      'the client proxy probing both instances',
      async () => {
        warm.push(await tracer.batch(BATCH, performance.now()))
        return (await rtt(near.peerId)) != null && (await rtt(far.peerId)) != null
      },
      { timeoutMs: 30_000, intervalMs: 200 },
    )
    // A new instance's first answers are slow (its service and proxy warm up), and the
    // selector's peak-EWMA takes such a spike at once and forgets it over its decay time:
    // until then the far instance may look cheaper (seen: `F10 | N4F6 | N10`). Traffic
    // for one decay time first, then the claim is judged on the settled choice.
    await settle(tracer, warm)
    const before = await measure(tracer, 'near')
    if (before.retried)
      console.log(`latency-choice: first window ${before.retried}, measured again`)
    const rttsBefore = [await rtt(near.peerId), await rtt(far.peerId)]
    const beforeLine = timeline(before.batches)

    let moved: Awaited<ReturnType<typeof watchMove>>
    await mesh.topo.setRtt('client', 'near', DEGRADED_RTT_MS)
    try {
      moved = await watchMove(tracer, 'far')
    } finally {
      await mesh.topo.setRtt('client', 'near', topology.rtt?.['client-near'] ?? 5)
    }
    const { batches, movedMs } = moved
    const sent = [...warm, ...before.all, ...batches]
    const failed = failures(sent)
    const total = sent.reduce((s, b) => s + b.answers.length, 0)
    const ms = (s: number | undefined) => (s == null ? '?' : (s * 1000).toFixed(1))
    console.log(
      [
        `latency-choice: instances on near (${mesh.topo.rtt('client', 'near')} ms) and far (${mesh.topo.rtt('client', 'far')} ms); the proxy's RTTs ${ms(rttsBefore[0])} and ${ms(rttsBefore[1])} ms`,
        `latency-choice: share to near after warm-up (${warm.length} batches): ${pct(before.share)}, ${summary(before.batches.flatMap((b) => b.answers))}; ${beforeLine}`,
        `latency-choice: time until ${SHARE * 100} % of a ${WINDOW}-request window went to far after client-near ${mesh.topo.rtt('client', 'near')} → ${DEGRADED_RTT_MS} ms: ${movedMs == null ? 'never' : `${(movedMs / 1000).toFixed(1)} s`} (${batches.length} batches of ${BATCH}: ${where(batches)})`,
        `latency-choice: timeline ${timeline(batches)}`,
        `latency-choice: the proxy's RTTs after the move: near ${await proxyRtt(mesh, CHOICE, near.peerId)} ms, far ${await proxyRtt(mesh, CHOICE, far.peerId)} ms`,
        `latency-choice: requests failed: ${failed.length}/${total}`,
      ].join('\n'),
    )
    assert.ok(before.share.to >= SHARE * MEASURED, `before: ${pct(before.share)}`)
    assert.ok(movedMs != null, `traffic did not move to far: ${mesh.log('client', 'proxy')}`)
    assert.ok(movedMs <= CHOICE_MOVE_BOUND_MS, `moved after ${movedMs} ms`)
    assert.deepEqual(failed, [], 'every request answered 200')
  })

  it('isolation: a node with another PSK sees no one, is seen by no one, and the mesh works on', async () => {
    const host = OUTSIDER
    const dir = join(mesh.dir, host)
    const pskFile = join(dir, 'other-swarm.key')
    await writeFile(pskFile, formatSwarmKey(generatePsk()), { mode: 0o600 })
    const encryptionFailed = (direction: 'inbound' | 'outbound') => {
      const name = `libp2p_connection_manager_dials_${direction}_errors_total`
      return (text: string) => metricValue(text, name, { [name]: 'EncryptionFailedError' }) ?? 0
    }
    const bootInbound = async () =>
      encryptionFailed('inbound')(await mesh.metrics(SPEC.registry, 'bootstrap'))
    const rejectedBefore = await bootInbound()

    const monitor = mesh.topo.spawn(host, 'ping-monitor', [
      '--psk-file',
      pskFile,
      '--key-file',
      join(dir, 'identity.key'),
      '--listen',
      `/ip4/${mesh.topo.address(host)}/tcp/4001`,
      '--addr-file',
      join(dir, 'addr'),
      '--metrics',
      BOOTSTRAP_METRICS,
      '--interval',
      '1s',
      '--bootstrap',
      mesh.addr(SPEC.registry, 'bootstrap'),
      '--log-level',
      'error',
    ])
    try {
      const [addr] = await readLinesWhenReady(join(dir, 'addr'), 30_000)
      assert.equal(addr.split('/p2p/')[1], outsiderPeer)
      type Entry = { peerId: string }
      const peersOf = async (h: string) =>
        JSON.parse(
          (await mesh.topo.httpGet(h, `http://${BOOTSTRAP_METRICS}/peers`)).body,
        ) as Entry[]
      const started = performance.now()
      let attempts = 0
      let rejected = 0
      let samples = 0
      for (let i = 0; i < 200; i++) {
        const elapsed = performance.now() - started
        if (elapsed > ISOLATION_MAX_MS) break
        assert.deepEqual(await peersOf(host), [], 'the outsider sees a peer')
        const seen = (await peersOf(SPEC.registry)).map((p) => p.peerId)
        assert.ok(!seen.includes(outsiderPeer), 'the bootstrap lists the outsider')
        const text = await mesh.topo.httpGet(host, `http://${BOOTSTRAP_METRICS}/metrics`)
        assert.equal(metricValue(text.body, 'mtc_ping_monitor_connected_peers'), 0)
        attempts = encryptionFailed('outbound')(text.body)
        rejected = (await bootInbound()) - rejectedBefore
        samples++
        if (elapsed >= ISOLATION_MIN_MS && attempts >= 1 && rejected >= 1) break
        await sleep(1_000)
      }
      // Its dials failed at the handshake, on both sides: not a timeout, not a refusal.
      assert.ok(attempts >= 1, `outsider's failed handshakes: ${attempts}`)
      assert.ok(rejected >= 1, `handshakes the bootstrap rejected: ${rejected}`)
      // The DHT: a mesh node knowing only the outsider's ID cannot reach it, while the
      // same lookup finds a mesh peer (so the check can tell the two apart).
      const [lookup, control] = await Promise.all([
        findPeerFrom(mesh, 'client', outsiderPeer),
        findPeerFrom(mesh, 'client', mesh.peerId('far', 'allocator')),
      ])
      assert.equal(lookup.found, false, 'the DHT gave the outsider away')
      assert.equal(control.found, true, `lookup of a mesh peer: ${control.error}`)
      const answer = await mesh.request(`/${CHOICE}/`)
      assert.equal(answer.status, 200, `${answer.body}${answer.error ?? ''}`)
      console.log(
        [
          `isolation: watched ${((performance.now() - started) / 1000).toFixed(1)} s (${samples} samples): outsider's peers 0, bootstrap listing it 0 times`,
          `isolation: failed handshakes (EncryptionFailedError): outsider ${attempts} outbound, bootstrap ${rejected} inbound`,
          `isolation: DHT lookup of the outsider from client: not found (${lookup.error}); of a mesh peer: found in ${control.ms} ms`,
          `isolation: mesh request meanwhile: ${answer.status} in ${answer.ms.toFixed(0)} ms`,
        ].join('\n'),
      )
    } finally {
      await monitor.stop()
    }
  })

  it("prometheus: the bootstrap's RTT gauges, as a real Prometheus scraped them, agree with the matrix", async () => {
    const series = 'mtc_ping_monitor_peer_rtt_seconds'
    const byPeer = new Map<string, string>()
    for (const h of [...SPEC.allocators, ...SPEC.clients]) {
      byPeer.set(mesh.peerId(h, h === 'client' ? 'proxy' : 'allocator'), h)
    }
    const daemons = new Set(byPeer.keys())
    for (const i of await mesh.instances()) byPeer.set(i.peerId, i.host)
    const q = async (fn: string) => {
      const out = new Map<string, number>()
      for (const r of await promQuery(mesh, `${fn}(${series}[15m])`)) {
        out.set(r.metric.peer, Number(r.value[1]))
      }
      return out
    }
    const counts = await waitFor(
      `${MIN_SCRAPES} scrapes of every daemon's RTT`,
      async () => {
        const c = await q('count_over_time')
        return [...daemons].every((p) => (c.get(p) ?? 0) >= MIN_SCRAPES) ? c : undefined
      },
      { timeoutMs: 60_000, intervalMs: 1_000 },
    )
    const lowQ = new Map<string, number>()
    for (const r of await promQuery(mesh, `quantile_over_time(${LOW_QUANTILE}, ${series}[15m])`)) {
      lowQ.set(r.metric.peer, Number(r.value[1]))
    }
    const medians = await promQuery(mesh, `quantile_over_time(0.5, ${series}[15m])`)
    const median = new Map(medians.map((r) => [r.metric.peer, Number(r.value[1])]))
    const mins = await q('min_over_time')
    const roles = new Map(medians.map((r) => [r.metric.peer, r.metric.role ?? '']))

    // The base: what the JS stack adds to every probe right now, as the bootstrap measures
    // its peers on its own host (0 ms of path): allowed above the tolerance, as in
    // Topology.measureRtt.
    const local = [...lowQ]
      .filter(([peer]) => (byPeer.get(peer) ?? mesh.hostOfPeer(peer)) === SPEC.registry)
      .filter(([peer]) => (counts.get(peer) ?? 0) >= MIN_SCRAPES)
      .map(([, lowS]) => lowS * 1000)
      .sort((x, y) => x - y)
    const baseMs = local.length > 0 ? local[Math.floor(local.length / 2)] : 0
    // And what the forwarder adds on each judged path now (its timer wakes late on a loaded
    // machine: 2–4 ms at a load of 50–70), measured by the harness's base probes.
    const pathBase = new Map<string, number>()
    for (const host of new Set(byPeer.values())) {
      if (host === SPEC.registry) continue
      const m = await mesh.topo.measureRtt(SPEC.registry, host)
      pathBase.set(host, Number.isFinite(m.baseMs) ? m.baseMs : 0)
    }
    console.log(
      `prometheus: base (same-host peers, p${LOW_QUANTILE * 100}) ${baseMs.toFixed(2)} ms; ` +
        `forwarder ${[...pathBase].map(([h, ms]) => `${h} ${ms.toFixed(2)} ms`).join(', ')}`,
    )
    const rows: string[] = []
    const wrong: string[] = []
    for (const [peer, lowS] of lowQ) {
      const host = byPeer.get(peer) ?? mesh.hostOfPeer(peer)
      const scrapes = counts.get(peer) ?? 0
      const configured = host == null ? undefined : mesh.topo.rtt(SPEC.registry, host)
      const measured = lowS * 1000
      // Judged: peers on other hosts with enough samples (same-host peers sit at 0 ms,
      // where the JS stack's ~1 ms is all there is; short-lived probes have one sample).
      const judged = host != null && host !== SPEC.registry && scrapes >= MIN_SCRAPES
      const allowance = baseMs + (host == null ? 0 : (pathBase.get(host) ?? 0))
      const ok = configured != null && rttWithinTolerance(measured, configured, allowance)
      if (judged && !ok) wrong.push(peer)
      rows.push(
        `prometheus: ${(host ?? '?').padEnd(8)} ${(roles.get(peer) ?? '').padEnd(12)} ${peer.slice(-8)}  configured ${String(configured ?? '?').padStart(3)} ms  measured p${LOW_QUANTILE * 100} ${measured.toFixed(2).padStart(6)} ms (min ${((mins.get(peer) ?? 0) * 1000).toFixed(2)}, median ${((median.get(peer) ?? 0) * 1000).toFixed(2)}, ${scrapes} scrapes)${judged ? (ok ? '' : '  OUT OF TOLERANCE') : '  (not judged)'}`,
      )
    }
    console.log(rows.sort().join('\n'))
    for (const p of daemons) assert.ok(lowQ.has(p), `no RTT series of ${byPeer.get(p)}`)
    assert.deepEqual(wrong, [], rows.join('\n'))
    assert.match(outsiderPeer, /^12D3Koo/)
    assert.ok(!lowQ.has(outsiderPeer), 'a series of the outsider')
  })
})

if (skip != null) console.log(`latency scenarios skipped: ${skip}`)
