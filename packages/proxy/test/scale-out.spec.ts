import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { freePort, waitFor } from '@mtc/testkit'
import { FakeAllocator } from './fake-allocator.ts'
import { http, Mesh, type ProxyProc } from './fixture.ts'

/**
 * Issue 14 item 3, with real processes: a real hl-service holding the scaling settings, a
 * client proxy, and a fake allocator that starts real instances (hello-world-server behind
 * a service-mode proxy) — the Docker scenario is in the allocator's tests.
 * `--concurrency 2 --max-instances 3`, one instance, 12 clients doing 300 ms requests
 * for 20 s: a second instance serves within 10 s, never a fourth, no request fails; p99
 * against the same run with `--max-instances 1`.
 */
const CLIENTS = 12
const RUN_MS = 20_000
const REQUEST_MS = 300
/** The claim: a second instance serving within this, from the start of the load. */
const SECOND_INSTANCE_BOUND_MS = 10_000

const mesh = new Mesh()
const allocator = new FakeAllocator(mesh, 'alloc', () => ({ kind: 'start' }))
let hlAddr = ''
let client: ProxyProc

async function register(service: string, flags: string[]): Promise<void> {
  await mesh.register(hlAddr, service, flags)
}

interface RunFigures {
  requests: number
  failed: number
  p50: number
  p99: number
  instances: string[]
  /** From the start of the load until the first answer of a second instance (ms). */
  secondAfterMs?: number
}

/** CLIENTS clients doing REQUEST_MS requests one after the other for RUN_MS. */
async function loadRun(service: string): Promise<RunFigures> {
  const started = performance.now()
  const latencies: number[] = []
  const firstSeen = new Map<string, number>()
  let failed = 0
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      while (performance.now() - started < RUN_MS) {
        const t0 = performance.now()
        const res = await http(client.port, `/${service}/slow?ms=${REQUEST_MS}&chunks=1`, {
          timeoutMs: 60_000,
        }).catch(() => undefined)
        if (res?.status !== 200) {
          failed++
          continue
        }
        const now = performance.now()
        latencies.push(now - t0)
        const id = String(res.headers['x-instance'])
        if (!firstSeen.has(id)) firstSeen.set(id, now - started)
      }
    }),
  )
  latencies.sort((a, b) => a - b)
  const at = (q: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]
  const order = [...firstSeen].sort((a, b) => a[1] - b[1])
  return {
    requests: latencies.length,
    failed,
    p50: at(0.5),
    p99: at(0.99),
    instances: order.map(([id]) => id),
    secondAfterMs: order[1]?.[1],
  }
}

/** The service answers through the client proxy (its first instance started and warm). */
async function warm(service: string): Promise<void> {
  await waitFor(
    `${service} served`,
    async () => (await http(client.port, `/${service}/`, { timeoutMs: 30_000 })).status === 200,
    { timeoutMs: 60_000, intervalMs: 500 },
  )
}

before(async () => {
  await mesh.start()
  hlAddr = (await mesh.hlService()).addr
  await allocator.start()
  client = await mesh.proxy([String(await freePort())], ['--hl', hlAddr])
})

after(async () => {
  await allocator.stop()
  await mesh.stop()
})

describe('scale-out on concurrency (real processes)', () => {
  const figures: Record<string, RunFigures> = {}

  it('--max-instances 1: the baseline stays on one instance', async () => {
    await register('busy-one', ['--concurrency', '2', '--max-instances', '1'])
    await warm('busy-one')
    figures.one = await loadRun('busy-one')
    console.log('max-instances 1:', JSON.stringify(figures.one))
    assert.equal(figures.one.failed, 0)
    assert.equal(allocator.count('busy-one'), 1, 'an instance started beyond --max-instances 1')
  })

  it('--concurrency 2 --max-instances 3: a second instance within 10 s, never a fourth, no failure', async () => {
    await register('busy', ['--concurrency', '2', '--max-instances', '3'])
    await warm('busy')
    figures.three = await loadRun('busy')
    console.log('max-instances 3:', JSON.stringify(figures.three))
    assert.equal(figures.three.failed, 0)
    assert.ok(figures.three.instances.length >= 2, JSON.stringify(figures.three))
    assert.ok(
      (figures.three.secondAfterMs ?? Infinity) < SECOND_INSTANCE_BOUND_MS,
      `second instance after ${figures.three.secondAfterMs} ms`,
    )
    assert.ok(allocator.count('busy') <= 3, `${allocator.count('busy')} instances started`)
    assert.ok(figures.three.instances.length <= 3)
    const outs = await client.metric(
      'mtc_proxy_scale_outs_total',
      { service: 'busy', trigger: 'panic', result: 'ok' },
      0,
    )
    assert.ok(outs >= 1, `${outs} scale-outs`)
    console.log(
      `p99 ${figures.three.p99.toFixed(0)} ms with scaling vs ${figures.one?.p99.toFixed(0)} ms without; ` +
        `requests ${figures.three.requests} vs ${figures.one?.requests}`,
    )
  })
})
