import assert from 'node:assert/strict'
import { Agent } from 'node:http'
import { after, before, describe, it } from 'node:test'
import { freePort } from '@mtc/testkit'
import { OBSERVATION_DECAY_MS } from '../src/constants.ts'
import { type Candidate, LatencyStats, rank } from '../src/selector.ts'
import { DelayRelay } from './delay-relay.ts'
import { http, Mesh, type ProxyProc } from './fixture.ts'

function candidate(id: string, rttMs: number, observedMs?: number): Candidate {
  const stats = new LatencyStats()
  stats.recordRtt(rttMs)
  if (observedMs != null) stats.recordLatency(observedMs, 0)
  return { id, usable: true, stats }
}

/** Hands out `n` requests one after the other, each to the cheapest, none ending. */
function spread(candidates: Candidate[], n: number): Map<string, number> {
  const counts = new Map(candidates.map((c) => [c.id, 0]))
  for (let i = 0; i < n; i++) {
    const best = rank(candidates, {}, new Set(), 0).ranked[0]
    best.stats.begin()
    counts.set(best.id, (counts.get(best.id) ?? 0) + 1)
  }
  return counts
}

describe('load-aware selection (units)', () => {
  it('at low load the nearest gets every request', () => {
    const near = candidate('near', 1, 5)
    const far = candidate('far', 20, 25)
    for (let i = 0; i < 20; i++) {
      const best = rank([far, near], {}, new Set(), 0).ranked[0]
      assert.equal(best.id, 'near')
      best.stats.begin()
      best.stats.end()
    }
  })

  it('requests in flight spill to the next instance, in proportion to speed', () => {
    const equal = spread([candidate('a', 1, 10), candidate('b', 1, 10)], 16)
    assert.deepEqual([...equal.values()], [8, 8])
    const mixed = spread([candidate('slow', 1, 50), candidate('fast', 1, 5)], 16)
    // 50 × (s + 1) vs 5 × (f + 1): the slow one gets about a tenth.
    assert.ok((mixed.get('slow') ?? 0) <= 2, JSON.stringify([...mixed]))
    assert.ok((mixed.get('slow') ?? 0) >= 1, JSON.stringify([...mixed]))
  })

  it('an instance no request measured yet takes one request at a time', () => {
    const known = candidate('known', 1, 20)
    const fresh = candidate('fresh', 1)
    const counts = spread([known, fresh], 10)
    assert.equal(counts.get('fresh'), 1)
    assert.equal(counts.get('known'), 9)
    // Once it answered, it is weighed like the others.
    fresh.stats.recordLatency(20, 0)
    assert.equal(rank([known, fresh], {}, new Set(), 0).ranked[0].id, 'fresh')
  })

  it('a latency spike counts at once and fades over ~10 s (peak-EWMA)', () => {
    const s = new LatencyStats()
    s.recordRtt(1)
    s.recordLatency(10, 0)
    s.recordLatency(200, 1000)
    assert.equal(s.score(1000), 200)
    // One good answer right after the spike moves it by 1/16 only...
    s.recordLatency(10, 1001)
    assert.ok(s.score(1001) > 180, String(s.score(1001)))
    // ...one good answer a second brings it down over about ten seconds...
    for (let t = 2000; t <= 11_000; t += 1000) s.recordLatency(10, t)
    const at10s = s.score(11_000)
    assert.ok(at10s > 10 + 190 / 4 && at10s < 10 + 190 / Math.E, String(at10s))
    // ...and heavy traffic within a second or so: the estimate follows the typical answer.
    s.recordLatency(200, 12_000)
    for (let i = 1; i <= 100; i++) s.recordLatency(10, 12_000 + i * 5)
    assert.ok(s.score(12_500) < 11, String(s.score(12_500)))
  })

  it('the soft limit looks at the nearest instance, not the least loaded', () => {
    const near = candidate('near', 2, 5)
    const far = candidate('far', 30, 35)
    for (let i = 0; i < 20; i++) near.stats.begin()
    const r = rank([near, far], { softRttMs: 10 }, new Set(), 0)
    assert.equal(r.ranked[0].id, 'far')
    assert.equal(r.aboveSoft, false)
  })
})

const SERVICE = 'load-share'
/** Concurrent clients, each sending one request after the other. */
const CLIENTS = 16
const lat: Array<[string, number]> = []

/**
 * Two instances of one service behind delay relays (the service's own time), a client
 * proxy, and CLIENTS concurrent clients: the share of each instance.
 */
describe('load-aware selection (real processes)', () => {
  const mesh = new Mesh()
  const relays: DelayRelay[] = []
  let client: ProxyProc

  before(async () => {
    await mesh.start()
    for (const [i, delay] of [10, 10].entries()) {
      const hello = await mesh.hello(`h${i + 1}`)
      const relay = new DelayRelay(hello.port, delay)
      await relay.start()
      relays.push(relay)
      await mesh.serviceProxy(SERVICE, relay.port)
    }
    client = await mesh.proxy([String(await freePort())])
    await mesh.routable(client.port, SERVICE)
  })

  after(async () => {
    for (const r of relays) r.kill()
    await mesh.stop()
  })

  /** CLIENTS clients send `perClient` GETs each; every one must succeed. Counts by instance. */
  async function load(perClient: number): Promise<Map<string, number>> {
    // Kept-alive connections, as real clients use: the harness adds less of its own time.
    const agent = new Agent({ keepAlive: true, maxSockets: CLIENTS })
    const counts = new Map<string, number>()
    await Promise.all(
      Array.from({ length: CLIENTS }, async () => {
        for (let i = 0; i < perClient; i++) {
          const t0 = performance.now()
          const res = await http(client.port, `/${SERVICE}/`, { agent })
          lat.push([String(res.headers['x-instance']), performance.now() - t0])
          assert.equal(res.status, 200, res.body.toString())
          const id = String(res.headers['x-instance'])
          counts.set(id, (counts.get(id) ?? 0) + 1)
        }
      }),
    )
    agent.destroy()
    return counts
  }

  /** Until both instances answered under load (both measured), bounded. */
  async function warmUp(): Promise<void> {
    for (let round = 0; round < 10; round++) {
      const seen = await load(4)
      if (seen.size === 2) return
    }
    throw new Error('one instance never answered under load')
  }

  it(`two equal instances share ${CLIENTS} concurrent clients (each 35–65 %)`, async () => {
    await warmUp()
    const counts = await load(25)
    const total = (counts.get('h1') ?? 0) + (counts.get('h2') ?? 0)
    const share = (counts.get('h1') ?? 0) / total
    console.log(`equal instances: h1 ${(share * 100).toFixed(1)} % of ${total}`)
    assert.ok(share >= 0.35 && share <= 0.65, JSON.stringify([...counts]))
  })

  it('an instance taking 50 ms next to one taking 5 ms gets < 20 %', async () => {
    relays[0].delayMs = 50
    relays[1].delayMs = 5
    await warmUp()
    // Steady state: what the equal run taught about the fast one fades (one time constant).
    const until = performance.now() + OBSERVATION_DECAY_MS
    while (performance.now() < until) await load(10)
    lat.length = 0
    const counts = await load(40)
    // What the clients saw: on a loaded host the proxies' own time narrows the gap.
    for (const id of ['h1', 'h2']) {
      const xs = lat
        .filter((l) => l[0] === id)
        .map((l) => l[1])
        .sort((a, b) => a - b)
      console.log(`${id}: ${xs.length} answers, median ${xs[xs.length >> 1]?.toFixed(1)} ms`)
    }
    const total = (counts.get('h1') ?? 0) + (counts.get('h2') ?? 0)
    const share = (counts.get('h1') ?? 0) / total
    console.log(`50 ms vs 5 ms: the slow one got ${(share * 100).toFixed(1)} % of ${total}`)
    assert.ok(share < 0.2, JSON.stringify([...counts]))
  })
})
