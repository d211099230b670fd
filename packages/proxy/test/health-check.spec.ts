import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { HealthCheck } from '../src/health-check.ts'
import { LatencyStats, preferImage } from '../src/selector.ts'

const quiet = Object.assign(() => {}, {
  error: () => {},
  trace: () => {},
  enabled: false,
}) as never

/** A local service whose /healthz answers `code` (0: never answers). */
let code = 200
let server: Server
let port: number
const held: Array<() => void> = []

before(async () => {
  server = createServer((req, res) => {
    if (req.url !== '/healthz') {
      res.writeHead(404).end()
      return
    }
    if (code === 0) {
      held.push(() => res.destroy())
      return
    }
    res.writeHead(code).end('x'.repeat(100_000))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  port = (server.address() as AddressInfo).port
})

after(async () => {
  for (const release of held) release()
  server.closeAllConnections()
  await new Promise((resolve) => server.close(resolve))
})

function check(threshold = 2, target = { host: '127.0.0.1', port }) {
  let failures = 0
  const hc = new HealthCheck({
    path: '/healthz',
    intervalMs: 300,
    threshold,
    target,
    log: quiet,
    onFailure: () => failures++,
  })
  return { hc, failures: () => failures }
}

describe('HTTP health check', () => {
  it('is ready only from the first 2xx, and not ready after `threshold` failures in a row', async () => {
    const { hc, failures } = check(2)
    code = 503
    hc.record(await hc.check())
    assert.equal(hc.ready, false, 'a failing service is not ready at start')
    code = 204
    hc.record(await hc.check())
    assert.equal(hc.ready, true)
    code = 500
    hc.record(await hc.check())
    assert.equal(hc.ready, true, 'one failure is below the threshold')
    code = 200
    hc.record(await hc.check())
    code = 301
    hc.record(await hc.check())
    assert.equal(hc.ready, true, 'a pass resets the count')
    hc.record(await hc.check())
    assert.equal(hc.ready, false, 'two failures in a row')
    assert.equal(failures(), 4)
  })

  it('counts a refused connection and a service that never answers as failures', async () => {
    const closed = createServer()
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
    const deadPort = (closed.address() as AddressInfo).port
    await new Promise((resolve) => closed.close(resolve))
    assert.equal(await check(1, { host: '127.0.0.1', port: deadPort }).hc.check(), false)
    code = 0
    const t0 = performance.now()
    assert.equal(await check().hc.check(), false)
    // Bounded by the interval (300 ms), not the service's silence.
    assert.ok(performance.now() - t0 < 5_000)
    code = 200
  })

  it('runs until its signal aborts', async () => {
    code = 200
    const { hc } = check()
    const stop = new AbortController()
    const running = hc.run(stop.signal)
    const t0 = performance.now()
    while (!hc.ready && performance.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 20))
    assert.equal(hc.ready, true)
    stop.abort()
    await running
  })
})

describe('preferImage (rolling updates)', () => {
  const inst = (id: string, imageId: string | undefined, usable = true) => ({
    id,
    imageId,
    usable,
    stats: new LatencyStats(),
  })

  it('keeps only instances of the current image once one of them is usable', () => {
    const old = inst('a', 'sha256:old')
    const cur = inst('b', 'sha256:new')
    assert.deepEqual(preferImage([old, cur], 'sha256:new'), [cur])
    assert.deepEqual(preferImage([old, cur], undefined), [old, cur])
  })

  it('keeps every instance while none of the current image is usable (not ready, excluded, none)', () => {
    const old = inst('a', 'sha256:old')
    const booting = inst('b', 'sha256:new', false)
    assert.deepEqual(preferImage([old, booting], 'sha256:new'), [old, booting])
    const cur = inst('c', 'sha256:new')
    assert.deepEqual(preferImage([old, cur], 'sha256:new', new Set(['c'])), [old, cur])
    assert.deepEqual(preferImage([old], 'sha256:new'), [old])
  })
})
