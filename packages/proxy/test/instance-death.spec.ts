import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { freePort, waitFor } from '@mtc/testkit'
import { type Behaviour, FakeAllocator } from './fake-allocator.ts'
import { http, Mesh, type ProxyProc } from './fixture.ts'

/**
 * The only instance of a service dies (issue 12 items 7 and 10): a request is served by a
 * new instance, never answered 502 or left waiting out --allocation-timeout. A fake
 * allocator starts real instances (a service-mode proxy and a hello-world-server) and can
 * hand out a dead one, as an allocator that has not noticed the death yet would.
 */
const ALLOCATION_TIMEOUT_S = 20
/** Far below the allocation timeout: the new instance is asked for at once. */
const PROMPT_MS = 10_000

const mesh = new Mesh()
/** What the allocator does next, by service; `start` when nothing is planned. */
const plans = new Map<string, Behaviour[]>()
const allocator = new FakeAllocator(mesh, 'alloc', (service) => {
  return plans.get(service)?.shift() ?? { kind: 'start' }
})
let client: ProxyProc

before(async () => {
  await mesh.start()
  await allocator.start()
  client = await mesh.proxy(
    [String(await freePort())],
    ['--allocation-timeout', `${ALLOCATION_TIMEOUT_S}s`],
  )
})

after(async () => {
  await allocator.stop()
  await mesh.stop()
})

/** Serves `service` once (from a new instance) and kills that instance; returns its record. */
async function serveThenKill(service: string) {
  const first = await http(client.port, `/${service}/`, { timeoutMs: 30_000 })
  assert.equal(first.status, 200, first.body.toString())
  const tag = String(first.headers['x-instance'])
  const started = allocator.started.get(tag)
  assert.ok(started != null, `instance ${tag} was started by the allocator`)
  // Dead at once: the instance's proxy and its service, without a goodbye.
  await started.proxy.proc.kill()
  await started.service.kill()
  return { tag, instance: started.instance }
}

describe('proxy: the only instance dies', () => {
  it('a request to an instance that died unnoticed is served by a new one, not answered 502', async () => {
    const { tag } = await serveThenKill('dies-unnoticed')
    // At once: the proxy probes every second, so it has not noticed yet.
    const t0 = performance.now()
    const res = await http(client.port, '/dies-unnoticed/', { timeoutMs: 30_000 })
    const ms = performance.now() - t0
    assert.equal(res.status, 200, `${res.headers['x-mtc-error']}: ${res.body.toString()}`)
    assert.notEqual(res.headers['x-instance'], tag)
    assert.equal(allocator.count('dies-unnoticed'), 2)
    assert.ok(ms < PROMPT_MS, `served after ${ms.toFixed(0)} ms`)
  })

  it('an allocation that hands out a dead instance is asked again instead of waited out', async () => {
    const { instance } = await serveThenKill('handed-out-dead')
    // The proxy has noticed the death (a failed probe), so the next request asks for an
    // instance, and the allocator hands out the dead one once.
    await waitFor(
      'the death noticed',
      () => client.proc.stderr().includes(`instance ${instance.peerId} down`),
      { timeoutMs: 15_000, intervalMs: 100 },
    )
    plans.set('handed-out-dead', [{ kind: 'reply', instance }])
    const t0 = performance.now()
    const res = await http(client.port, '/handed-out-dead/', {
      timeoutMs: (ALLOCATION_TIMEOUT_S + 10) * 1000,
    })
    const ms = performance.now() - t0
    assert.equal(res.status, 200, `${res.headers['x-mtc-error']}: ${res.body.toString()}`)
    assert.ok(ms < PROMPT_MS, `served after ${ms.toFixed(0)} ms`)
    // First start, the dead one handed out, the new start.
    assert.equal(allocator.count('handed-out-dead'), 3)
  })
})
