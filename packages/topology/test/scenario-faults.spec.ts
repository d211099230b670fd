import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { LIVENESS_BUSY_INTERVAL_MS, LIVENESS_TIMEOUT_MS } from '@mtc/p2pnode'
import {
  OPEN_STREAM_TIMEOUT_MS,
  PROBE_INTERVAL_MS,
  PROBE_TIMEOUT_MS,
  REGISTRY_RETRY_MS,
} from '@mtc/proxy'
import { waitFor } from '@mtc/testkit'
import { HELLO_IMAGE, Mesh, type MeshSpec, type StreamAnswer } from '../src/index.ts'
import { allocateOn, fourHosts, missing, summary } from './scenario-helpers.ts'

/**
 * Faults on the simulated WAN (issue #6): a cut-off host, a dead bootstrap, a restarted
 * registry, an allocator dying mid-start. One mesh for all four, in an order where each
 * leaves the mesh as the next needs it (every scenario checks its own preconditions).
 * Each prints its figures one per line, prefixed `faults:`.
 */

const SERVICE = 'hello-world-server'
const PATH = `/${SERVICE}/`

const SPEC: MeshSpec = {
  topology: fourHosts(),
  registry: 'registry',
  // The redundant bootstrap sits on `far`: killing the first leaves the mesh this one.
  bootstraps: ['far'],
  allocators: ['near', 'far'],
  clients: ['client'],
  // near's dockerd lacks the image: its allocator must fetch ~130 MB over the overlay,
  // which is the window in which it is killed mid-start.
  preload: ['far'],
  // No soft limit: no background allocation moves traffic behind the scenarios' back. No
  // hard limit either: a new instance's first RTT sample, taken while the machine is busy
  // starting it, can read far above its link's 40 ms, and the proxy then refuses it (503
  // ERR_INSTANCES_TOO_FAR to the cold request: a proxy weakness, reported separately).
  services: [{ name: SERVICE }],
}

/*
 * p2pnode's liveness monitor pings a connection with open streams every
 * LIVENESS_BUSY_INTERVAL_MS and aborts it after LIVENESS_TIMEOUT_MS in which nothing
 * arrived. Nothing else notices a silent peer (TCP would retransmit for ~15 minutes), so
 * this bounds how long a request already sent to a cut-off instance waits before the
 * proxy sees the connection loss and retries it (libp2p's own monitor, which it replaced:
 * a ping every 10 s, aborted after ≥ 5 s). Measured here: the last held request answered
 * 2.7 and 5.1 s after the cut (7.1 s with libp2p's monitor).
 */
/** Scheduling noise on this loaded 2-core machine, added to every bound. */
const NOISE_MS = 4_000

/** Answers of the stream before the cut-off scenario cuts the host. */
const BEFORE_CUT = 20

/** A request slower than this was held up by the fault (a warm one takes ~10–80 ms). */
const SLOW_MS = 1_000

function line(figure: string, value: string): void {
  console.log(`faults: ${figure}: ${value}`)
}

function statuses(answers: StreamAnswer[]): string {
  const by = new Map<string, number>()
  for (const a of answers) {
    const k = a.status === 0 ? `no answer (${a.error})` : `${a.status} ${a.code}`.trim()
    by.set(k, (by.get(k) ?? 0) + 1)
  }
  return [...by].map(([k, n]) => `${n} × ${k}`).join(', ') || 'none'
}

const skip = missing()

describe('scenarios: faults', { skip, timeout: 360_000 }, () => {
  let mesh: Mesh

  before(async () => {
    mesh = await Mesh.start(SPEC)
    console.log(`faults: mesh up: ${JSON.stringify(mesh.timings)} (ms after start)`)
  })

  after(async () => {
    await mesh?.destroy()
  })

  async function clientMetric(name: string, labels: Record<string, string> = {}) {
    return (await mesh.metric('client', 'proxy', name, labels)) ?? 0
  }

  it('an allocator killed mid-start: the cold request is served through another allocator', async () => {
    for (const h of SPEC.allocators) {
      assert.deepEqual(await mesh.containers(h, { all: true }), [], `containers on ${h} already`)
    }
    const inspect = await mesh.dockerd('near').docker(['image', 'inspect', HELLO_IMAGE], true)
    assert.notEqual(inspect.code, 0, 'near must lack the image (it fetches it: the window)')

    try {
      await killMidStart()
    } finally {
      // Heal: near's allocator back with its identity, for the scenarios that follow.
      await mesh.start('near', 'allocator')
    }
  })

  async function upstreamRtts(): Promise<string> {
    const text = await mesh.metrics('client', 'proxy').catch((e: Error) => e.message)
    return text
      .split('\n')
      .filter((l) => l.startsWith('mtc_proxy_upstream_rtt_seconds'))
      .join('\n')
  }

  async function killMidStart(): Promise<void> {
    const t0 = performance.now()
    const cold = mesh.request(PATH, { timeoutMs: 120_000 })
    // The proxy asks the nearest allocator first: near (5 ms) before far (40 ms).
    await waitFor(
      "near's allocator starting the instance",
      async () =>
        ((await mesh.metric('near', 'allocator', 'mtc_allocator_instances_starting')) ?? 0) >= 1,
      { timeoutMs: 30_000, intervalMs: 50 },
    )
    const startSeenMs = performance.now() - t0
    await mesh.kill('near', 'allocator')
    const killedMs = performance.now() - t0
    const first = await cold
    const total = performance.now() - t0
    const rtts = first.status === 200 ? '' : await upstreamRtts()
    assert.equal(
      first.status,
      200,
      `${first.body}${first.error ?? ''}\n${rtts}\n${mesh.log('client', 'proxy')}`,
    )
    assert.equal(first.body, 'Hello, world\n')

    // Served by an instance far's allocator started; near has none running.
    const onFar = await mesh.containers('far', { service: SERVICE })
    assert.equal(onFar.length, 1, 'one instance on far')
    assert.equal(onFar[0].allocator, mesh.peerId('far', 'allocator'))
    const onNear = await mesh.containers('near', { all: true })
    assert.deepEqual(
      onNear.filter((c) => c.running),
      [],
      'nothing runs on near (its allocator died before the start)',
    )
    // One allocation, answered ok (near's failure is the same allocation's first attempt).
    assert.equal(
      await clientMetric('mtc_proxy_allocations_total', { service: SERVICE, result: 'ok' }),
      1,
    )
    const nearHasImage =
      (await mesh.dockerd('near').docker(['image', 'inspect', HELLO_IMAGE], true)).code === 0

    line('allocator killed mid-start: start seen on near after', `${startSeenMs.toFixed(0)} ms`)
    line(
      'allocator killed mid-start: near SIGKILLed after',
      `${killedMs.toFixed(0)} ms (image on near then: ${nearHasImage ? 'loaded' : 'not yet'})`,
    )
    line(
      'allocator killed mid-start: cold request answered 200 after',
      `${first.ms.toFixed(0)} ms (by an instance on far; ${(total - killedMs).toFixed(0)} ms after the kill)`,
    )
    line(
      'allocator killed mid-start: containers left by the killed allocator on near',
      String(onNear.length),
    )
  }

  it('the host serving the traffic is cut off: requests fail over with no failed GET', async () => {
    await mesh.start('near', 'allocator') // no-op when it runs
    // Instances on near and far, asked of each allocator directly (as a proxy would).
    if ((await mesh.containers('far', { service: SERVICE })).length === 0) {
      await allocateOn(mesh, 'far', SERVICE)
    }
    const nearAlloc = await allocateOn(mesh, 'near', SERVICE)
    const near = (await mesh.containers('near', { service: SERVICE })).find(
      (c) => c.peerId === nearAlloc.peerId,
    )
    assert.ok(near != null, 'an instance on near')
    assert.equal((await mesh.containers('far', { service: SERVICE })).length, 1)
    // The client's proxy learns the near instance (provider refresh, 10 s) and prefers it.
    await waitFor(
      'the client proxy sending every request to the instance on near',
      async () => {
        const t = await mesh.tracedRequests(PATH, 10, { timeoutMs: 10_000 })
        return t.servedBy.length === 1 && t.servedBy[0].peerId === near.peerId
      },
      { timeoutMs: 40_000, intervalMs: 500 },
    )

    const retriesBefore = await clientMetric('mtc_proxy_retries_total', { service: SERVICE })
    const lead = 2_000
    const stream = mesh.requestStream(PATH, {
      intervalMs: 50,
      durationMs: lead + 14_000,
      timeoutMs: 40_000,
    })
    // The cut comes once 20 requests were answered by near (~1 s of the stream), not after
    // a fixed time: on a loaded machine the stream's process starts a second or more late
    // (seen: 19 requests in the 2 s lead).
    await waitFor('20 answers before the cut', () => stream.answered() >= BEFORE_CUT, {
      timeoutMs: 30_000,
      intervalMs: 50,
    })
    const cutFrom = Date.now()
    await mesh.topo.cut('near')
    const cutAt = Date.now()
    let answers: StreamAnswer[]
    try {
      answers = await stream.done
    } finally {
      await mesh.topo.restore('near')
    }
    const retries =
      (await clientMetric('mtc_proxy_retries_total', { service: SERVICE })) - retriesBefore

    const before = answers.filter((a) => a.at < cutFrom)
    const afterCut = answers.filter((a) => a.at >= cutAt)
    const failed = answers.filter((a) => a.status !== 200)
    // Any answer to a request sent after the cut came from far: near is unreachable.
    const firstFar = Math.min(
      ...afterCut.filter((a) => a.status === 200).map((a) => a.at + a.ms - cutFrom),
    )
    // Steady again: from this request on, every one answered 200 without being held up.
    let steadyIdx = afterCut.length
    while (
      steadyIdx > 0 &&
      afterCut[steadyIdx - 1].status === 200 &&
      afterCut[steadyIdx - 1].ms < SLOW_MS
    ) {
      steadyIdx--
    }
    const steady = steadyIdx < afterCut.length ? afterCut[steadyIdx].at - cutFrom : Number.NaN
    const held = answers.filter((a) => a.ms >= SLOW_MS)
    const lastHeldDone = Math.max(0, ...held.map((a) => a.at + a.ms - cutFrom))

    line(
      'cut-off: requests sent',
      `${answers.length} (one every 50 ms; ${before.length} before the cut, ${afterCut.length} after)`,
    )
    line('cut-off: requests failed', `${failed.length} (${statuses(failed)})`)
    line('cut-off: failover, cut → first answer from far', `${firstFar.toFixed(0)} ms`)
    line(
      'cut-off: stream steady again (every later request 200 in < 1 s) from',
      `${steady.toFixed(0)} ms after the cut`,
    )
    line(
      'cut-off: requests held up by the cut (≥ 1 s), all retried on far',
      `${held.length}, the last answered ${lastHeldDone.toFixed(0)} ms after the cut`,
    )
    line(
      'cut-off: slowest request',
      `${Math.max(...answers.map((a) => a.ms)).toFixed(0)} ms; retries counted by the proxy: ${retries}`,
    )
    line('cut-off: requests after steady', summary(afterCut.slice(steadyIdx)))

    // The contract: an idempotent request is retried after a connection loss (at most
    // MAX_ATTEMPTS), so none fails as long as its client waits out the detection.
    assert.deepEqual(
      failed.map(
        (a) => `#${a.i} +${(a.at - cutFrom).toFixed(0)} ms: ${a.status} ${a.code} ${a.error ?? ''}`,
      ),
      [],
      'no GET may fail',
    )
    // Requests on near when it was cut were retried on far: held until liveness dropped
    // near's connection (at 50 ms apart, ~20 in the first second), or cut at once when the
    // cut broke the connection (seen: first answer from far 90 ms after the cut, one retry
    // that took 768 ms, nothing held ≥ 1 s).
    assert.ok(retries >= 1, `requests on near were retried: ${retries} retries`)
    assert.ok(
      before.length >= BEFORE_CUT && afterCut.length >= 200,
      `the stream ran: ${before.length} requests before the cut, ${afterCut.length} after`,
    )
    // New requests leave near once a probe fails: a round starts every PROBE_INTERVAL_MS
    // and fails after PROBE_TIMEOUT_MS.
    const newRequestsBound = PROBE_INTERVAL_MS + PROBE_TIMEOUT_MS + NOISE_MS
    assert.ok(steadyIdx < afterCut.length, 'the stream became steady again')
    assert.ok(steady <= newRequestsBound, `steady after ${steady} ms > ${newRequestsBound} ms`)
    assert.ok(firstFar <= newRequestsBound, `first answer from far after ${firstFar} ms`)
    // Requests already on near's connection wait for liveness to drop it, then are retried
    // (a retry may first wait to open a stream).
    const heldBound =
      LIVENESS_BUSY_INTERVAL_MS + LIVENESS_TIMEOUT_MS + OPEN_STREAM_TIMEOUT_MS + NOISE_MS
    assert.ok(lastHeldDone <= heldBound, `a held request ended ${lastHeldDone} ms after the cut`)
  })

  it('hl-service and its etcd restart: lookups resume by themselves', async () => {
    const readsFound = () => clientMetric('mtc_proxy_registry_reads_total', { result: 'found' })
    assert.equal((await mesh.hlCli(['get', SERVICE], 'client')).code, 0, 'hl-cli get works')

    const t0 = performance.now()
    await mesh.kill('registry', 'hl-service') // SIGKILL; etcd goes with it
    const down = await mesh.hlCli(['get', SERVICE], 'client')
    assert.notEqual(down.code, 0, 'hl-cli get fails while hl-service is down')
    // A registry that does not answer fails no request (cached record, running instances).
    const during = await mesh.requests(PATH, 5, { timeoutMs: 10_000 })
    assert.deepEqual(
      during.map((a) => a.status),
      [200, 200, 200, 200, 200],
    )
    const downMs = performance.now() - t0

    const t1 = performance.now()
    await mesh.start('registry', 'hl-service') // ready: listening, etcd up
    const readyMs = performance.now() - t1
    // hl-cli from the client host: a new process, dialling the restarted hl-service.
    const get = await waitFor(
      'hl-cli get from the client',
      async () => {
        const r = await mesh.hlCli(['--json', 'get', SERVICE], 'client')
        return r.code === 0 ? r : undefined
      },
      { timeoutMs: 30_000, intervalMs: 200 },
    )
    const getMs = performance.now() - t1
    assert.match(get.stdout, new RegExp(SERVICE))
    const list = await mesh.hlCli(['list'], 'client')
    assert.equal(list.code, 0, list.stderr)
    assert.match(list.stdout, new RegExp(SERVICE))

    // A service registered after the restart: the proxy has no record of it, reads it
    // from hl-service, and an allocator resolves it there too, all without a restart.
    const again = 'hello-again'
    const foundBefore = await readsFound()
    const t2 = performance.now()
    await mesh.register({ name: again, upload: false })
    const registeredMs = performance.now() - t1
    const cold = await mesh.request(`/${again}/`, { timeoutMs: 90_000 })
    assert.equal(
      cold.status,
      200,
      `${cold.body}${cold.error ?? ''}\n${mesh.log('client', 'proxy')}`,
    )
    assert.equal(cold.body, 'Hello, world\n')
    const coldMs = performance.now() - t2
    // The proxy read the new record (it may be reading it still when the answer came).
    await waitFor(
      'the proxy reading the new record',
      async () => (await readsFound()) > foundBefore,
      {
        timeoutMs: REGISTRY_RETRY_MS + 10_000,
        intervalMs: 500,
      },
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n${mesh.log('client', 'proxy').slice(-6000)}`)
    })
    const readMs = performance.now() - t1

    line(
      'registry restart: hl-service + etcd down for',
      `${downMs.toFixed(0)} ms (requests meanwhile: 5 × 200)`,
    )
    line('registry restart: hl-service back (etcd up) after', `${readyMs.toFixed(0)} ms`)
    line(
      'registry restart: first hl-cli get from the client OK after',
      `${getMs.toFixed(0)} ms after the restart began`,
    )
    line(
      'registry restart: new service registered after',
      `${registeredMs.toFixed(0)} ms; its first request 200 in ${cold.ms.toFixed(0)} ms (cold start; ${coldMs.toFixed(0)} ms incl. registering)`,
    )
    line(
      'registry restart: client proxy read a record from the restarted hl-service by',
      `${readMs.toFixed(0)} ms after the restart began`,
    )
  })

  it('the first bootstrap is killed: the mesh keeps working and a new peer joins via the second', async () => {
    await mesh.kill('registry', 'bootstrap')
    const t0 = performance.now()
    const warm = await mesh.requests(PATH, 10, { timeoutMs: 10_000 })
    assert.deepEqual(
      warm.map((a) => a.status),
      Array(10).fill(200),
    )

    // A peer that never ran: a client proxy on `registry` (fresh identity), given both
    // bootstraps as every daemon is; only far's answers.
    await mesh.add('registry', 'proxy')
    const joinedProxy = mesh.peerId('registry', 'proxy')
    const upMs = performance.now() - t0
    await waitFor(
      "the new proxy in far's bootstrap's peer table",
      async () => {
        const r = await mesh.topo.httpGet('far', 'http://127.0.0.1:9100/peers')
        return (JSON.parse(r.body) as Array<{ peerId: string }>).some(
          (p) => p.peerId === joinedProxy,
        )
      },
      { timeoutMs: 30_000, intervalMs: 250 },
    )
    const joinedMs = performance.now() - t0
    // It finds the service's instances through the DHT it reached via far's bootstrap.
    const first = await mesh.request(PATH, { client: 'registry', timeoutMs: 60_000 })
    assert.equal(
      first.status,
      200,
      `${first.body}${first.error ?? ''}\n${mesh.log('registry', 'proxy')}`,
    )
    assert.equal(first.body, 'Hello, world\n')
    const firstMs = performance.now() - t0
    const more = await mesh.requests(PATH, 5, { client: 'registry', timeoutMs: 10_000 })
    assert.deepEqual(
      more.map((a) => a.status),
      Array(5).fill(200),
    )

    line(
      'bootstrap killed: warm requests through the client afterwards',
      `10 × 200 (${summary(warm)})`,
    )
    line('bootstrap killed: a new proxy up (listening) after', `${upMs.toFixed(0)} ms`)
    line("bootstrap killed: the new proxy in far's /peers after", `${joinedMs.toFixed(0)} ms`)
    line(
      'bootstrap killed: its first request 200 after',
      `${firstMs.toFixed(0)} ms (the request itself ${first.ms.toFixed(0)} ms)`,
    )
  })
})

if (skip != null) console.log(`fault scenarios skipped: ${skip}`)
