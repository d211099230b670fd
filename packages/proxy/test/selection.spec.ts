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
  // Gaps of 100 ms: the gateway's peak-EWMA takes one slow answer at once, and with gaps
  // of 25 ms one stall of a loaded 2-CPU CI machine on the fastest sent the next dozen
  // requests elsewhere (stalls there reach ~100 ms, rarely more).
  const delays = [0, 100, 200]
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

/**
 * Sends GETs one after the other until `done` says so or `ms` passed; all must succeed.
 * Returns the answers and when (ms after the call) the last STREAK of them began: from then
 * on the condition held, however long the harness then took to see 10 answers in a row.
 */
async function until(
  ms: number,
  done: (last: string[]) => boolean,
): Promise<{ seen: string[]; heldSinceMs: number }> {
  const seen: string[] = []
  const sentAt: number[] = []
  const started = performance.now()
  const deadline = started + ms
  while (performance.now() < deadline) {
    sentAt.push(performance.now() - started)
    seen.push(await get())
    if (done(seen.slice(-STREAK))) return { seen, heldSinceMs: sentAt.at(-STREAK) ?? 0 }
  }
  throw new Error(`condition not met within ${ms} ms; answers: ${seen.join(' ')}`)
}

/** Answers in a row that show where traffic goes. */
const STREAK = 10
/** Waits that are not the claim (warm-up, and how long to watch): generous on 2 busy cores. */
const WARM_UP_MS = 30_000
const WATCH_MS = 20_000
/** "Within a few seconds": from the change until traffic had moved. */
const MOVE_BOUND_MS = 5_000

describe('proxy: selection and failover among three instances', () => {
  it('sends ≥ 95% of requests to the fastest instance once warm', async () => {
    // Warm-up: every instance is tried and measured.
    await until(WARM_UP_MS, (last) => last.length === STREAK && last.every((x) => x === 'h1'))
    const answers: string[] = []
    for (let i = 0; i < 60; i++) answers.push(await get())
    const share = answers.filter((x) => x === 'h1').length / answers.length
    assert.ok(share >= 0.95, `fastest got ${(share * 100).toFixed(0)}%: ${answers.join(' ')}`)
  })

  it('moves to the next when the fastest slows down, within a few seconds', async () => {
    // 4× the slowest (as 200 against 50 before the gaps grew): a slowed instance fades back
    // towards its RTT and is tried again, so it must stay slower than the others for long.
    relays[0].delayMs = 800
    const moved = await until(
      WATCH_MS,
      (last) => last.length === STREAK && last.every((x) => x === 'h2'),
    )
    assert.ok(
      moved.heldSinceMs < MOVE_BOUND_MS,
      `moved after ${moved.heldSinceMs.toFixed(0)} ms: ${moved.seen.join(' ')}`,
    )
  })

  it('moves on when the preferred one dies, and no GET fails meanwhile', async () => {
    const before = await client.metric('mtc_proxy_retries_total', { service: SERVICE }, 0)
    relays[1].kill()
    // Every request in `until` asserts 200: the failover is invisible to clients.
    const moved = await until(
      WATCH_MS,
      (last) => last.length === STREAK && last.every((x) => x === 'h3'),
    )
    assert.ok(
      moved.heldSinceMs < MOVE_BOUND_MS,
      `moved after ${moved.heldSinceMs.toFixed(0)} ms: ${moved.seen.join(' ')}`,
    )
    const retries = (await client.metric('mtc_proxy_retries_total', { service: SERVICE })) - before
    assert.ok(retries >= 1, `${retries} retries`)
    assert.ok((await client.metric('mtc_proxy_instance_changes_total', { service: SERVICE })) >= 2)
  })
})
