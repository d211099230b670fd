import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { RTT_PROTOCOL } from '../src/constants.ts'
import type { MeshNode } from '../src/node.ts'
import { probeRtt } from '../src/rtt.ts'
import { loopbackPair, stopPair } from '../src/testing.ts'

let nodes: MeshNode[] = []
after(async () => {
  await stopPair(nodes)
})

/** The first echo on each stream comes `firstDelayMs` late, the others at once. */
async function slowFirstEcho(node: MeshNode, firstDelayMs: number): Promise<{ pings: number }> {
  const seen = { pings: 0 }
  await node.libp2p.unhandle(RTT_PROTOCOL)
  await node.libp2p.handle(RTT_PROTOCOL, async (stream) => {
    let first = true
    for await (const buf of stream) {
      seen.pings++
      if (first) {
        first = false
        await sleep(firstDelayMs)
      }
      stream.send(buf)
    }
    await stream.close()
  })
  return seen
}

describe('probeRtt', () => {
  it('sends `samples` pings on one stream and returns the smallest RTT', async () => {
    nodes = await loopbackPair()
    const [b, a] = nodes
    const seen = await slowFirstEcho(a, 200)

    const one = await probeRtt(b.libp2p, a.peerId)
    assert.ok(one >= 0.2, `a single sample holds the late echo: ${one} s`)
    assert.equal(seen.pings, 1)

    const best = await probeRtt(b.libp2p, a.peerId, { samples: 3 })
    assert.ok(best < 0.1, `the minimum of three leaves the late echo out: ${best} s`)
    assert.equal(seen.pings, 4)
  })
})
