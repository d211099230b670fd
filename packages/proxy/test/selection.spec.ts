import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { freePort } from '@mtc/testkit'
import { DelayRelay } from './delay-relay.ts'
import { http, Mesh, type ProxyProc } from './fixture.ts'

const SERVICE = 'hello-latency'

const mesh = new Mesh()
const relays: DelayRelay[] = []
let client: ProxyProc

before(async () => {
  await mesh.start()
  const delays = [0, 25, 50]
  for (const [i, delay] of delays.entries()) {
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

async function get(): Promise<string> {
  const res = await http(client.port, `/${SERVICE}/`)
  assert.equal(res.status, 200, `${res.status} ${res.body.toString()}`)
  return String(res.headers['x-instance'])
}

/** Sends GETs one after the other until `done` says so or `ms` passed; all must succeed. */
async function until(ms: number, done: (last: string[]) => boolean): Promise<string[]> {
  const seen: string[] = []
  const deadline = performance.now() + ms
  while (performance.now() < deadline) {
    seen.push(await get())
    if (done(seen.slice(-10))) return seen
  }
  throw new Error(`condition not met within ${ms} ms; answers: ${seen.join(' ')}`)
}

describe('proxy: selection and failover among three instances', () => {
  it('sends ≥ 95% of requests to the fastest instance once warm', async () => {
    // Warm-up: every instance is tried and measured.
    await until(10_000, (last) => last.length === 10 && last.every((x) => x === 'h1'))
    const answers: string[] = []
    for (let i = 0; i < 60; i++) answers.push(await get())
    const share = answers.filter((x) => x === 'h1').length / answers.length
    assert.ok(share >= 0.95, `fastest got ${(share * 100).toFixed(0)}%: ${answers.join(' ')}`)
  })

  it('moves to the next when the fastest slows down, within a few seconds', async () => {
    relays[0].delayMs = 200
    const started = performance.now()
    await until(5_000, (last) => last.length === 10 && last.every((x) => x === 'h2'))
    assert.ok(performance.now() - started < 5_000)
  })

  it('moves on when the preferred one dies, and no GET fails meanwhile', async () => {
    const before = await client.metric('mtc_proxy_retries_total', { service: SERVICE })
    relays[1].kill()
    // Every request in `until` asserts 200: the failover is invisible to clients.
    await until(5_000, (last) => last.length === 10 && last.every((x) => x === 'h3'))
    const retries = (await client.metric('mtc_proxy_retries_total', { service: SERVICE })) - before
    assert.ok(retries >= 1, `${retries} retries`)
    assert.ok((await client.metric('mtc_proxy_instance_changes_total', { service: SERVICE })) >= 2)
  })
})
