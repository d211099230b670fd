import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { generatePsk, type MeshNode } from '@mtc/p2pnode'
import { startLoopbackNode } from '@mtc/p2pnode/testing'
import { HTTP_PROTOCOL, MAX_HTTP_STREAMS_PER_CONNECTION } from '../src/constants.ts'
import { MeshAgent } from '../src/mesh-agent.ts'
import { PREFACE_OK } from '../src/stream-preface.ts'

/**
 * A mesh stream that is not carrying a request (kept warm, or being closed) has nobody
 * reading its errors; when its connection is cut with an error (the liveness monitor's
 * "peer silent", a reset transport), that error must not take the gateway down. Seen on
 * a loaded machine: the client proxy died of an unhandled 'error' event on StreamDuplex.
 * An uncaught error here fails the test.
 */
let gateway: MeshNode
let instance: MeshNode

before(async () => {
  const psk = generatePsk()
  gateway = await startLoopbackNode({ psk })
  instance = await startLoopbackNode({ psk })
  // The instance side says it reached its service, then keeps the stream open.
  await instance.libp2p.handle(
    HTTP_PROTOCOL,
    (stream) => {
      stream.send(new TextEncoder().encode(PREFACE_OK))
    },
    { maxInboundStreams: MAX_HTTP_STREAMS_PER_CONNECTION },
  )
})

after(async () => {
  await Promise.all([gateway?.stop(), instance?.stop()])
})

/** Resolves on 'close' (events.once would reject on the 'error' this test is about). */
function closeOf(d: NodeJS.EventEmitter): Promise<void> {
  return new Promise((resolve) => d.once('close', () => resolve()))
}

/** Cuts every connection between the two nodes with an error, as the liveness monitor does. */
function cutWithError(): void {
  for (const c of gateway.libp2p.getConnections(instance.libp2p.peerId)) {
    c.abort(new Error('peer silent for 2000 ms after a liveness ping'))
  }
}

describe('proxy: mesh streams cut while nobody reads them', () => {
  it('a warm (idle) stream cut with an error is dropped; the process lives on', async () => {
    await gateway.libp2p.dial(instance.libp2p.getMultiaddrs()[0])
    const agent = new MeshAgent({ libp2p: gateway.libp2p, peer: instance.libp2p.peerId })
    const s = await agent.acquire()
    agent.release(s)
    assert.equal(agent.idleStreams, 1)
    const closed = closeOf(s.duplex)
    cutWithError()
    await closed
    // Let any 'error' emitted after 'close' surface as an uncaught exception.
    await new Promise((r) => setImmediate(r))
    assert.equal(agent.idleStreams, 0)
    agent.destroy()
  })

  it('a stream being closed and cut with an error: the process lives on', async () => {
    await gateway.libp2p.dial(instance.libp2p.getMultiaddrs()[0])
    const agent = new MeshAgent({ libp2p: gateway.libp2p, peer: instance.libp2p.peerId })
    const s = await agent.acquire()
    agent.destroy() // a stream released now is closed, not kept
    agent.release(s)
    assert.equal(s.duplex.writableEnded, true)
    const closed = closeOf(s.duplex)
    cutWithError()
    await closed
    await new Promise((r) => setImmediate(r))
  })
})

describe('proxy: warm streams after a burst', () => {
  it('a burst of 100 streams released together is kept whole and serves the next burst', async () => {
    await gateway.libp2p.dial(instance.libp2p.getMultiaddrs()[0])
    let opened = 0
    const agent = new MeshAgent({
      libp2p: gateway.libp2p,
      peer: instance.libp2p.peerId,
      onStreamOpened: () => opened++,
    })
    try {
      const burst = 100
      for (let round = 0; round < 3; round++) {
        const streams = await Promise.all(Array.from({ length: burst }, () => agent.acquire()))
        for (const s of streams) agent.release(s)
        assert.equal(agent.idleStreams, burst, `round ${round}: streams kept warm`)
      }
      // With a cap on idle streams below the burst, each round reopened the surplus.
      assert.equal(opened, burst, 'streams opened over three bursts')
    } finally {
      agent.destroy()
    }
  })
})
