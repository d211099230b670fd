import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { Libp2p, Logger } from '@libp2p/interface'
import { MinInstancesKeeper } from '../src/daemon/min-instances.ts'

/**
 * The min-instances keeper's upkeep (README "Min instances"): its survey asks every other
 * allocator for its status, N² queries a second mesh-wide at N allocators; with no
 * service having a minimum there is nothing to keep and nobody is asked.
 */
describe('MinInstancesKeeper upkeep', () => {
  it('with no record having a minimum it asks no other allocator', async () => {
    let lookups = 0
    let streams = 0
    // Any use of the overlay but the registry's list: the allocators' DHT lookup or a dial.
    const libp2p = {
      peerId: { toString: () => '12D3KooWself', equals: () => false },
      contentRouting: {
        findProviders: () => {
          lookups++
          return (async function* () {})()
        },
      },
      dialProtocol: async () => {
        streams++
        throw new Error('no dialing in this test')
      },
      newStream: async () => {
        streams++
        throw new Error('no dialing in this test')
      },
    } as unknown as Libp2p
    const log = Object.assign(() => {}, { trace: () => {}, error: () => {} }) as unknown as Logger
    let listed = 0
    const keeper = new MinInstancesKeeper({
      libp2p,
      manager: { serviceCounts: () => ({}) } as never,
      metrics: {} as never,
      // No hl-service reachable: no record, so no minimum to keep.
      registryPeer: async () => {
        listed++
        return undefined
      },
      lookup: async () => {
        throw new Error('unused')
      },
      log,
    })
    const stop = new AbortController()
    const running = keeper.run(stop.signal)
    // Two and a half rounds (KEEPER_INTERVAL_MS is 1 s).
    await new Promise((r) => setTimeout(r, 2_500))
    stop.abort()
    await running
    assert.ok(listed >= 2, `the records were looked at each round (${listed})`)
    assert.equal(lookups, 0, 'no DHT lookup of the allocators')
    assert.equal(streams, 0, 'no status query')
  })
})
