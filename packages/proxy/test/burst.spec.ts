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

  it('beyond 256 streams held by long answers, a request waits 10 s, then 503 ERR_INSTANCE_BUSY', async () => {
    // Each /slow answer holds its stream 14 s (head at once, one line at the end).
    const held = 256
    const extra = 20
    const started = performance.now()
    const answers = await Promise.all(
      Array.from({ length: held + extra }, () =>
        http(client.port, `/${SERVICE}/slow?ms=14000&chunks=1`, { timeoutMs: 60_000 }).then(
          (a) => ({ ...a, ms: performance.now() - started }),
        ),
      ),
    )
    const ok = answers.filter((a) => a.status === 200)
    const busy = answers.filter((a) => a.status === 503)
    assert.equal(
      ok.length + busy.length,
      held + extra,
      JSON.stringify(answers.map((a) => a.status)),
    )
    assert.ok(busy.length >= extra / 2, `${busy.length} busy answers`)
    for (const a of busy) {
      assert.equal(a.headers['x-mtc-error'], 'ERR_INSTANCE_BUSY')
      assert.equal(a.headers['retry-after'], '1')
      // It waited for a stream (10 s), and was not failed at once.
      assert.ok(a.ms > 8_000, `busy after ${a.ms.toFixed(0)} ms`)
    }
    assert.equal((await http(client.port, `/${SERVICE}/`)).status, 200)
  })
})
