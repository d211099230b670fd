import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { peerIdFromString } from '@libp2p/peer-id'
import { Registry } from 'prom-client'
import { Autoscaler } from '../src/autoscaler.ts'
import { Instance, type InstanceRegistry, ServiceEntry } from '../src/instance-registry.ts'
import type { MeshAgent } from '../src/mesh-agent.ts'
import { ProxyMetrics } from '../src/metrics.ts'

/**
 * The scale-out decision (Knative's stable and panic windows) against a fake allocator: a
 * real Instance whose requests this test begins and ends, and what its status reports.
 */
const PEER = '12D3KooWPrbAHP9XguUGSc58Bc3FYLUYQADJGP1Wuwj6HxMJK1dE'
const silent = Object.assign(() => {}, {
  error: () => {},
  trace: () => {},
  enabled: false,
}) as never

function setUp(concurrency: number) {
  const entry = new ServiceEntry('hello')
  const inst = new Instance(peerIdFromString(PEER), {} as MeshAgent)
  inst.up = true
  inst.ready = true
  entry.instances.set(inst.id, inst)
  const asked: Array<{ at: number }> = []
  const autoscaler = new Autoscaler({
    registry: { activeServices: () => [entry] } as unknown as InstanceRegistry,
    allocator: {
      allocate: async () => undefined,
      scaleOut: async () => {
        asked.push({ at: performance.now() })
        return { skipped: 'at-max' }
      },
    },
    requirementsSource: {
      get: async () => ({ scaling: { concurrency, minInstances: 0, maxInstances: 3 } }),
    },
    metrics: new ProxyMetrics(new Registry()),
    log: silent,
    waiting: () => 0,
  })
  return { inst, asked, autoscaler }
}

describe('autoscaler: stable and panic windows', () => {
  it('a backlog of quick requests released at once after an outage asks for no instance', async () => {
    // Target 10 (the default): a GET every 20 ms of ~10 ms each is far below it; the 100
    // GETs held during an outage reach the replacement at once and are served within
    // 0.2 s — 10 request-seconds, 10 per second over the panic window, not 100.
    const { inst, asked, autoscaler } = setUp(10)
    autoscaler.start()
    try {
      await sleep(600)
      const t0 = performance.now()
      for (let i = 0; i < 100; i++) inst.begin()
      // A probe of the instance during the burst: its status says 100 in flight.
      inst.reported = { inFlight: 100, at: performance.now(), previous: 0 }
      for (let i = 0; i < 100; i++) setTimeout(() => inst.end(), 2 * i)
      // The steady traffic goes on: one request in flight now and then.
      const steady = setInterval(() => {
        inst.begin()
        setTimeout(() => inst.end(), 10)
      }, 20)
      try {
        await sleep(1_000)
        // The next probe: the burst is over.
        inst.reported = { inFlight: 0, at: performance.now(), previous: 100 }
        // The stable window and then some.
        await sleep(3_000)
      } finally {
        clearInterval(steady)
      }
      assert.deepEqual(
        asked.map((a) => Math.round(a.at - t0)),
        [],
        'scale-outs asked (ms after the burst)',
      )
    } finally {
      await autoscaler.stop()
    }
  })

  it('twice the target held over the panic window asks at once', async () => {
    // Target 2, 12 requests of 300 ms in flight all the time: 6× the target.
    const { inst, asked, autoscaler } = setUp(2)
    const started = performance.now()
    for (let i = 0; i < 12; i++) inst.begin()
    autoscaler.start()
    try {
      await sleep(2_500)
    } finally {
      await autoscaler.stop()
      for (let i = 0; i < 12; i++) inst.end()
    }
    assert.equal(asked.length >= 1, true, 'no scale-out asked')
    // Two ticks (the panic window covered) and a loaded machine's timer lag.
    const after = asked[0].at - started
    assert.ok(after < 2_500, `asked after ${after.toFixed(0)} ms`)
    console.log(`panic: scale-out asked ${after.toFixed(0)} ms after 6× the target began`)
  })
})
