import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { peerIdFromString } from '@libp2p/peer-id'
import { Registry } from 'prom-client'
import type { Instance, InstanceRegistry } from '../src/instance-registry.ts'
import { ServiceEntry } from '../src/instance-registry.ts'
import { ProxyMetrics } from '../src/metrics.ts'
import { OnDemand } from '../src/on-demand.ts'

const PEER = '12D3KooWPrbAHP9XguUGSc58Bc3FYLUYQADJGP1Wuwj6HxMJK1dE'
const silent = Object.assign(() => {}, {
  error: () => {},
  trace: () => {},
  enabled: false,
}) as never

describe('on demand: waiting for a new instance', () => {
  it('waits without spinning while the allocated instance is not usable yet', async () => {
    const entry = new ServiceEntry('hello')
    const inst = { id: PEER, usable: false } as unknown as Instance
    const registry = {
      adopt: async () => {
        entry.instances.set(inst.id, inst)
        return inst
      },
    } as unknown as InstanceRegistry
    const onDemand = new OnDemand({
      allocator: { allocate: async () => peerIdFromString(PEER) },
      registry,
      metrics: new ProxyMetrics(new Registry()),
      log: silent,
      waitTimeoutMs: 5_000,
    })
    // The probe that makes the instance usable runs on a timer: a waiter that spins on
    // microtasks never lets it run, so cap the number of wake-ups it may take.
    setTimeout(() => {
      ;(inst as { usable: boolean }).usable = true
      entry.notify()
    }, 50)
    let picks = 0
    const pick = (): Instance | undefined => {
      if (++picks > 100) throw new Error(`woken ${picks} times while nothing changed`)
      return inst.usable ? inst : undefined
    }
    const got = await onDemand.waitFor(entry, pick, new AbortController().signal)
    assert.equal(got, inst)
    assert.ok(picks <= 4, `${picks} wake-ups`)
    onDemand.stop()
  })

  it('lets the new probe of an instance whose connection was lost answer before replacing it', async () => {
    const entry = new ServiceEntry('hello')
    // Up before; its connection was just lost: down until the probe in flight answers.
    const inst = { id: PEER, usable: false, everUp: true } as unknown as Instance
    ;(inst as { probing?: Promise<void> }).probing = new Promise<void>((resolve) =>
      setTimeout(() => {
        ;(inst as { usable: boolean }).usable = true
        entry.notify()
        resolve()
      }, 50),
    )
    entry.instances.set(inst.id, inst)
    let asked = 0
    const onDemand = new OnDemand({
      allocator: {
        allocate: async () => {
          asked++
          return undefined
        },
      },
      registry: {} as InstanceRegistry,
      metrics: new ProxyMetrics(new Registry()),
      log: silent,
      waitTimeoutMs: 5_000,
    })
    const got = await onDemand.waitFor(
      entry,
      () => (inst.usable ? inst : undefined),
      new AbortController().signal,
    )
    assert.equal(got, inst)
    assert.equal(asked, 0, 'a live instance is not replaced')
    onDemand.stop()
  })

  it('asks once while every instance drains: requests arriving meanwhile share the ask', async () => {
    const entry = new ServiceEntry('hello')
    // The only instance drains (it answers, takes no request); its allocator, not knowing
    // (the instance was told to stop by someone else), hands it out again at once.
    const draining = { id: PEER, up: true, usable: false, everUp: true } as unknown as Instance
    entry.instances.set(draining.id, draining)
    const replacement = { id: 'replacement', up: true, usable: false } as unknown as Instance
    let asked = 0
    const onDemand = new OnDemand({
      allocator: {
        allocate: async () => {
          asked++
          return peerIdFromString(PEER)
        },
      },
      registry: { adopt: async () => draining } as unknown as InstanceRegistry,
      metrics: new ProxyMetrics(new Registry()),
      log: silent,
      waitTimeoutMs: 10_000,
    })
    const pick = (): Instance | undefined => (replacement.usable ? replacement : undefined)
    // A request every 20 ms for 0.8 s (as a client's steady traffic), then the replacement
    // (found by the next lookup) becomes usable and takes them all.
    const requests = Array.from({ length: 40 }, async (_, i) => {
      await sleep(20 * i)
      return await onDemand.waitFor(entry, pick, new AbortController().signal)
    })
    await sleep(1_000)
    ;(replacement as { usable: boolean }).usable = true
    entry.instances.set(replacement.id, replacement)
    entry.notify()
    const got = await Promise.all(requests)
    onDemand.stop()
    assert.ok(
      got.every((g) => g === replacement),
      'every request went to the replacement',
    )
    assert.equal(asked, 1, `${asked} asks for 40 requests`)
  })
})
