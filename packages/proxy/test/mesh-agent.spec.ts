import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Stream } from '@libp2p/interface'
import { generatePsk, type MeshNode } from '@mtc/p2pnode'
import { startLoopbackNode } from '@mtc/p2pnode/testing'
import { waitFor } from '@mtc/testkit'
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
/** The instance's side of each stream, in the order they were opened. */
const instanceSides: Stream[] = []

before(async () => {
  const psk = generatePsk()
  gateway = await startLoopbackNode({ psk })
  instance = await startLoopbackNode({ psk })
  // The instance side says it reached its service, then keeps the stream open.
  await instance.libp2p.handle(
    HTTP_PROTOCOL,
    (stream) => {
      instanceSides.push(stream)
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

describe('proxy: idle streams', () => {
  /** A warm stream of a fresh agent, with `idleMs` of idle time, and the instance's side. */
  async function warm(idleMs = 10_000) {
    await gateway.libp2p.dial(instance.libp2p.getMultiaddrs()[0])
    const agent = new MeshAgent({ libp2p: gateway.libp2p, peer: instance.libp2p.peerId })
    const opened = instanceSides.length
    const s = await agent.acquire()
    await waitFor('the instance side', () => instanceSides.length > opened)
    s.idleTimeoutMs = idleMs
    return { agent, s, remote: instanceSides[instanceSides.length - 1] }
  }

  it('a parked stream is closed after its idle time, counted from each park', async () => {
    const IDLE_MS = 400
    const { agent, s } = await warm(IDLE_MS)
    try {
      agent.release(s)
      // Reused before its idle time is up, for longer than the idle time: not dropped...
      await sleep(IDLE_MS / 2)
      assert.equal(await agent.acquire(), s)
      await sleep(IDLE_MS * 1.5)
      assert.equal(s.usable, true, 'a stream in use is not idle')
      // ...and parked again, it gets its whole idle time from then on.
      const parkedAt = performance.now()
      agent.release(s)
      assert.equal(agent.idleStreams, 1)
      await waitFor('the idle stream dropped', () => agent.idleStreams === 0, {
        timeoutMs: 5_000,
        intervalMs: 20,
      })
      const idle = performance.now() - parkedAt
      assert.ok(idle >= IDLE_MS - 50, `dropped after ${idle.toFixed(0)} ms idle`)
      assert.equal(s.duplex.writableEnded, true, 'closed')
    } finally {
      agent.destroy()
    }
  })

  it('a parked stream that receives bytes nobody asked for is dropped', async () => {
    const { agent, s, remote } = await warm()
    try {
      agent.release(s)
      assert.equal(agent.idleStreams, 1)
      remote.send(new TextEncoder().encode('HTTP/1.1 200 OK\r\n'))
      await waitFor('the stream dropped', () => agent.idleStreams === 0)
      // The next request gets a new stream, not the one out of step.
      const next = await agent.acquire()
      assert.notEqual(next, s)
      agent.release(next)
    } finally {
      agent.destroy()
    }
  })

  it('a parked stream the instance ends (its service closed the connection) is dropped', async () => {
    const { agent, s, remote } = await warm()
    try {
      agent.release(s)
      await remote.close()
      await waitFor('the stream dropped', () => agent.idleStreams === 0)
      assert.equal(s.usable, false)
    } finally {
      agent.destroy()
    }
  })
})
