import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { MeshNode } from '../src/node.ts'
import { generatePsk } from '../src/psk.ts'

/** The part of kad-dht's (private) self-query state this test reads. */
interface KadDhtSelfQuery {
  querySelf: { querySelfPromise?: unknown }
}

describe('client nodes (CLIs, tools)', () => {
  it('run their DHT self-query from the start: every query waits for it, kad-dht delays it 1 s', async () => {
    // No bootstrap: the self-query, once started, waits for a peer (up to 5 s), so it is
    // seen running. With kad-dht's default it only starts 1 s after start().
    const node = await MeshNode.startClient({ role: 'test', psk: generatePsk() })
    try {
      await sleep(100)
      const dht = node.libp2p.services.dht as unknown as KadDhtSelfQuery
      assert.ok(dht.querySelf != null, 'kad-dht internals changed: adapt this test')
      assert.notEqual(dht.querySelf.querySelfPromise, undefined, 'the self-query is not running')
    } finally {
      await node.stop()
    }
  })
})
