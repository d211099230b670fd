import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { freePort } from '@mtc/testkit'
import { REGISTRY_RETRY_MS } from '../src/constants.ts'
import { http, Mesh, type ProxyProc } from './fixture.ts'

/**
 * A mesh without an hl-service (as the benchmarks and many small meshes run): requests
 * never wait for the proxy's background lookups of a registry in the DHT. Before, the
 * first request after each retry period waited up to REQUIREMENTS_FIRST_WAIT_MS (1 s) for
 * a lookup that could not succeed: a 1-connection benchmark's p99 was ~940 ms.
 */
const SERVICE = 'hello-world-server'
const mesh = new Mesh()
let client: ProxyProc

before(async () => {
  await mesh.start()
  const hello = await mesh.hello('h1')
  await mesh.serviceProxy(SERVICE, hello.port)
  client = await mesh.proxy([String(await freePort())])
  await mesh.routable(client.port, SERVICE)
})

after(async () => {
  await mesh.stop()
})

describe('proxy: a mesh without a registry', () => {
  it('holds no request for a registry lookup, over more than one retry period', async () => {
    const until = performance.now() + REGISTRY_RETRY_MS * 1.5
    const slow: number[] = []
    let count = 0
    // Bounded by time and count: one request at a time, as a 1-connection client sends.
    while (performance.now() < until && count < 100_000) {
      const t0 = performance.now()
      const res = await http(client.port, `/${SERVICE}/`)
      const ms = performance.now() - t0
      assert.equal(res.status, 200)
      count++
      if (ms > 500) slow.push(Math.round(ms))
    }
    assert.deepEqual(slow, [], `${slow.length} of ${count} requests took > 500 ms`)
  })
})
