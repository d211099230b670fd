import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { freePort } from '@mtc/testkit'
import { http, Mesh, type ProxyProc } from './fixture.ts'

/**
 * A burst under the gateway's in-flight cap: streams being opened count against the
 * per-instance cap, requests beyond it wait for a stream, and none fails for lack of one.
 */
const SERVICE = 'hello-burst'
const BURST = 1_000
const mesh = new Mesh()
let client: ProxyProc

before(async () => {
  await mesh.start()
  const hello = await mesh.hello('b1')
  await mesh.serviceProxy(SERVICE, hello.port)
  client = await mesh.proxy([String(await freePort())])
  await mesh.routable(client.port, SERVICE)
})

after(async () => {
  await mesh.stop()
})

describe('proxy: a burst of simultaneous requests', () => {
  it(`${BURST} simultaneous GETs: all 200 (or 503 with Retry-After), no 502`, async (t) => {
    const answers = await Promise.all(
      Array.from({ length: BURST }, () =>
        http(client.port, `/${SERVICE}/`, { timeoutMs: 60_000 }).catch((err: Error) => ({
          status: 0,
          headers: {} as Record<string, string>,
          body: Buffer.from(err.message),
        })),
      ),
    )
    const byStatus = new Map<number, number>()
    for (const a of answers) byStatus.set(a.status, (byStatus.get(a.status) ?? 0) + 1)
    const summary = JSON.stringify(Object.fromEntries(byStatus))
    t.diagnostic(`answers by status: ${summary}`)
    for (const a of answers) {
      if (a.status === 200) continue
      assert.equal(a.status, 503, `${summary}: ${a.body.toString()}`)
      assert.ok(a.headers['retry-after'] != null, `${summary}: 503 without Retry-After`)
    }
    // Under the gateway's cap and with one quick service, nearly all are served.
    assert.ok((byStatus.get(200) ?? 0) >= BURST * 0.9, summary)
    assert.equal(await client.metric('mtc_proxy_requests_in_flight'), 0)
    assert.equal((await http(client.port, `/${SERVICE}/`)).status, 200)
  })
})
