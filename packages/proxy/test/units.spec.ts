import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { RTT_DISTANCE_PROBES, RTT_SETTLE_PROBES } from '../src/constants.ts'
import { PROXY_ERRORS } from '../src/errors.ts'
import { endToEndHeaders, upgradeHeaders } from '../src/http-headers.ts'
import { idleTimeoutFor } from '../src/mesh-agent.ts'
import { requestHead } from '../src/request-head.ts'
import { parseRequirements } from '../src/requirements.ts'
import { type Candidate, LatencyStats, rank } from '../src/selector.ts'
import { parseGatewayTarget } from '../src/service-name.ts'

/** An instance probed RTT_SETTLE_PROBES times at `rttMs` (its distance is judged). */
function candidate(id: string, rttMs: number, observedMs?: number, usable = true): Candidate {
  const stats = new LatencyStats()
  for (let i = 0; i < RTT_SETTLE_PROBES; i++) stats.recordRtt(rttMs)
  if (observedMs != null) stats.recordLatency(observedMs, 0)
  return { id, usable, stats }
}

describe('selection', () => {
  it('ranks by expected latency and never uses an instance above the hard limit', () => {
    const r = rank(
      [
        candidate('far', 80),
        candidate('near', 2, 5),
        candidate('mid', 10),
        candidate('down', 1, 1, false),
      ],
      { softRttMs: 5, hardRttMs: 50 },
      new Set(),
      0,
    )
    assert.deepEqual(
      r.ranked.map((c) => c.id),
      ['near', 'mid'],
    )
    assert.equal(r.tooFar, 1)
    assert.equal(r.aboveSoft, false)
    const soft = rank([candidate('mid', 10)], { softRttMs: 5 }, new Set(), 0)
    assert.equal(soft.aboveSoft, true)
  })

  it('judges distance on the smallest recent probe RTT: a busy prober does not push a near instance out', () => {
    // Issue #18, a 30-host run: an in-region instance 9 ms away probed at 10–50 ms while
    // the prober's own event loop was busy; an EWMA of those crossed the 35 ms hard limit,
    // the instance was dropped as too far and a warm request got 503.
    const limits = { softRttMs: 20, hardRttMs: 35 }
    const near = candidate('near', 9)
    for (const ms of [48, 44, 50, 39, 47, 46, 12, 49]) near.stats.recordRtt(ms)
    const r = rank([near], limits, new Set(), 0)
    assert.deepEqual(
      r.ranked.map((c) => c.id),
      ['near'],
    )
    assert.equal(r.tooFar, 0)
    assert.equal(r.aboveSoft, false)
    assert.equal(near.stats.rttMs, 9)
    // A real rise (a route change) counts once the low samples are out of the window.
    for (let i = 0; i < RTT_DISTANCE_PROBES; i++) near.stats.recordRtt(60 + i)
    assert.equal(near.stats.rttMs, 60)
    assert.equal(rank([near], limits, new Set(), 0).tooFar, 1)
  })

  it('does not judge an instance too far on its first probes: it is unsettled until RTT_SETTLE_PROBES', () => {
    // Issue #18: a proxy just started on a starved host read its own host's instance at
    // 533 ms on the first probe and answered 503 ERR_INSTANCES_TOO_FAR at once.
    const limits = { softRttMs: 20, hardRttMs: 35 }
    const local = { id: 'local', usable: true, stats: new LatencyStats() }
    local.stats.recordRtt(533)
    let r = rank([local], limits, new Set(), 0)
    assert.deepEqual([r.ranked.length, r.tooFar, r.unsettled], [0, 0, 1])
    // Its next probes, on time, say where it is.
    local.stats.recordRtt(0.4)
    r = rank([local], limits, new Set(), 0)
    assert.deepEqual(
      r.ranked.map((c) => c.id),
      ['local'],
    )
    // Nor above the soft limit: a late first probe must not start a second instance.
    const fresh = { id: 'fresh', usable: true, stats: new LatencyStats() }
    fresh.stats.recordRtt(20.28)
    r = rank([fresh], limits, new Set(), 0)
    assert.deepEqual([r.ranked.length, r.aboveSoft], [1, false])
    fresh.stats.recordRtt(25)
    fresh.stats.recordRtt(24)
    assert.equal(rank([fresh], limits, new Set(), 0).aboveSoft, true)
    // One really far away is judged too far once probed enough.
    const far = candidate('far', 80)
    r = rank([far], limits, new Set(), 0)
    assert.deepEqual([r.ranked.length, r.tooFar, r.unsettled], [0, 1, 0])
  })

  it('a fast-failing instance loses to a slower healthy one; observations fade', () => {
    const failing = new LatencyStats()
    failing.recordRtt(1)
    failing.recordLatency(1, 0)
    failing.recordError(0)
    const healthy = new LatencyStats()
    healthy.recordRtt(1)
    healthy.recordLatency(30, 0)
    assert.ok(failing.score(0) > healthy.score(0))
    // Long after, both fade back to their RTT.
    assert.ok(Math.abs(healthy.score(120_000) - 1) < 0.01)
    assert.ok(Math.abs(failing.score(120_000) - 1) < 0.01)
  })
})

describe('gateway paths and headers', () => {
  it('maps /<service>/<rest>?<query> to /<rest>?<query>', () => {
    assert.deepEqual(parseGatewayTarget('/svc/a/b?x=1'), { service: 'svc', path: '/a/b?x=1' })
    assert.deepEqual(parseGatewayTarget('/svc?x=1'), { service: 'svc', path: '/?x=1' })
    assert.deepEqual(parseGatewayTarget('/svc//a'), { service: 'svc', path: '//a' })
    assert.throws(() => parseGatewayTarget('http://x/svc/'), /absolute path/)
  })

  it('drops hop-by-hop headers and those named in Connection', () => {
    const raw = [
      'Connection',
      'close, X-A',
      'X-A',
      '1',
      'Keep-Alive',
      'x',
      'TE',
      'trailers',
      'Proxy-Foo',
      'y',
      'X-B',
      '2',
      'Set-Cookie',
      'a',
      'Set-Cookie',
      'b',
    ]
    assert.deepEqual(endToEndHeaders(raw), ['X-B', '2', 'Set-Cookie', 'a', 'Set-Cookie', 'b'])
  })

  it('reads the original requirements format (milliseconds)', () => {
    assert.deepEqual(
      parseRequirements({ Perf: { SoftReq: { RTT: 10 }, HardReq: { RTT: 50 } } }, 'x'),
      {
        softRttMs: 10,
        hardRttMs: 50,
      },
    )
    assert.throws(() =>
      parseRequirements({ Perf: { SoftReq: { RTT: 60 }, HardReq: { RTT: 50 } } }, 'x'),
    )
  })
})

describe('client side: request heads, upgrades, warm streams', () => {
  it('writes the request head the instance gets', () => {
    const head = requestHead('POST', '/a?b=1', ['Host', 'svc', 'Content-Length', '3'])
    assert.equal(
      head.toString('latin1'),
      'POST /a?b=1 HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\n\r\n',
    )
  })

  it('keeps Connection: Upgrade and Upgrade for a protocol switch, drops other hop-by-hop', () => {
    const raw = ['Connection', 'keep-alive, Upgrade', 'Upgrade', 'websocket', 'Keep-Alive', 'x']
    raw.push('Sec-WebSocket-Accept', 'abc')
    assert.deepEqual(upgradeHeaders(raw), [
      'Sec-WebSocket-Accept',
      'abc',
      'Connection',
      'Upgrade',
      'Upgrade',
      'websocket',
    ])
  })

  it('a warm stream idles a second less than the service’s Keep-Alive timeout, at most 4 s', () => {
    assert.equal(idleTimeoutFor([]), 4_000)
    assert.equal(idleTimeoutFor(['Keep-Alive', 'timeout=5']), 4_000)
    assert.equal(idleTimeoutFor(['keep-alive', 'max=100, timeout=3']), 2_000)
    assert.equal(idleTimeoutFor(['Keep-Alive', 'timeout=1']), 0)
    assert.equal(idleTimeoutFor(['Keep-Alive', 'timeout=60']), 4_000)
    assert.equal(idleTimeoutFor(['Keep-Alive', 'max=5']), 4_000)
  })
})

describe('README', () => {
  it('lists exactly the error codes of src/errors.ts, with their statuses', async () => {
    const readme = await readFile(join(import.meta.dirname, '..', 'README.md'), 'utf8')
    const section = readme.slice(
      readme.indexOf('## Errors'),
      readme.indexOf('\n## ', readme.indexOf('## Errors') + 1),
    )
    const rows = [...section.matchAll(/^\|\s*`(ERR_[A-Z_]+)`\s*\|\s*(\d{3})\s*\|/gm)].map((m) => [
      m[1],
      Number(m[2]),
    ])
    const table = Object.entries(PROXY_ERRORS).map(([code, e]) => [code, e.status])
    assert.deepEqual(rows.sort(), table.sort())
  })
})
