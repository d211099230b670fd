import assert from 'node:assert/strict'
import { Socket } from 'node:net'
import { describe, it } from 'node:test'
import { setImmediate as nextTurn } from 'node:timers/promises'
import type { MessageStream } from '@libp2p/interface'
import { waitFor } from '@mtc/testkit'
import { Uint8ArrayList } from 'uint8arraylist'
import { loopbackPair, stopPair } from '../src/testing.ts'
import { COALESCE_MAX_BYTES, coalesceWrites } from '../src/write-coalescing.ts'

/** The part of a secured connection coalesceWrites uses, recording what reaches it. */
function fakeConn() {
  const conn = {
    status: 'open' as string,
    writableNeedsDrain: false,
    sent: [] as Uint8Array[],
    events: [] as string[],
    send(data: Uint8Array | Uint8ArrayList): boolean {
      conn.sent.push(data.subarray())
      conn.events.push('send')
      return !conn.writableNeedsDrain
    },
    async close(): Promise<void> {
      conn.events.push('close')
    },
    abort(): void {
      conn.status = 'aborted'
    },
  }
  return conn
}

/** Frames written in one turn by the integration test, and its test protocol. */
const FRAMES = 20
const TEST_PROTOCOL = '/mtc/test-coalesce/1.0.0'

const bytes = (...values: number[]): Uint8Array => Uint8Array.from(values)

describe('coalesceWrites', () => {
  it('sends the frames of one event-loop turn as one message, in order', async () => {
    const raw = fakeConn()
    const conn = coalesceWrites(raw as unknown as MessageStream)
    assert.equal(conn.send(bytes(1, 2)), true)
    assert.equal(conn.send(new Uint8ArrayList(bytes(3), bytes(4, 5))), true)
    assert.equal(conn.send(bytes(6)), true)
    assert.equal(raw.sent.length, 0, 'nothing leaves before the end of the turn')
    await nextTurn()
    assert.deepEqual(raw.sent, [bytes(1, 2, 3, 4, 5, 6)])
    conn.send(bytes(7))
    await nextTurn()
    assert.deepEqual(raw.sent, [bytes(1, 2, 3, 4, 5, 6), bytes(7)])
  })

  it('sends a full message at once, and what is left over at the end of the turn', async () => {
    const raw = fakeConn()
    const conn = coalesceWrites(raw as unknown as MessageStream)
    conn.send(new Uint8Array(100))
    conn.send(new Uint8Array(COALESCE_MAX_BYTES))
    assert.equal(raw.sent.length, 1)
    assert.equal(raw.sent[0].byteLength, COALESCE_MAX_BYTES)
    await nextTurn()
    assert.equal(raw.sent.length, 2)
    assert.equal(raw.sent[1].byteLength, 100)
    await nextTurn()
    assert.equal(raw.sent.length, 2, 'no empty message afterwards')
  })

  it('fills every Noise message when frames a little larger than one follow each other', async () => {
    // 64 KiB socket reads relayed as yamux frames (12-byte header): sent as they came,
    // each would leave as a full Noise message and a ~30-byte one.
    const raw = fakeConn()
    const conn = coalesceWrites(raw as unknown as MessageStream)
    const frame = 65_536 + 12
    let total = 0
    for (let i = 0; i < 5; i++) {
      const data = new Uint8Array(frame).fill(i + 1)
      conn.send(data)
      total += frame
    }
    await nextTurn()
    const sizes = raw.sent.map((d) => d.byteLength)
    assert.equal(
      sizes.reduce((a, b) => a + b, 0),
      total,
    )
    for (const size of sizes.slice(0, -1)) assert.equal(size % COALESCE_MAX_BYTES, 0, `${sizes}`)
    assert.ok(sizes.at(-1)! < COALESCE_MAX_BYTES, 'only the end of the turn sends a partial one')
    const all = Buffer.concat(raw.sent)
    for (let i = 0; i < 5; i++) assert.equal(all[i * frame + frame - 1], i + 1, 'in order')
  })

  it('passes backpressure on', async () => {
    const raw = fakeConn()
    const conn = coalesceWrites(raw as unknown as MessageStream)
    raw.writableNeedsDrain = true
    assert.equal(conn.send(bytes(1)), false)
    await nextTurn()
    assert.deepEqual(raw.sent, [bytes(1)], 'queued data still goes to the connection buffer')
  })

  it('sends what is queued before closing', async () => {
    const raw = fakeConn()
    const conn = coalesceWrites(raw as unknown as MessageStream)
    conn.send(bytes(1))
    await conn.close()
    assert.deepEqual(raw.events, ['send', 'close'])
    assert.deepEqual(raw.sent, [bytes(1)])
  })

  it('drops what is queued when the connection was aborted', async () => {
    const raw = fakeConn()
    const conn = coalesceWrites(raw as unknown as MessageStream)
    conn.send(bytes(1))
    raw.status = 'aborted'
    await nextTurn()
    assert.deepEqual(raw.sent, [])
  })
})

describe('MeshNode connections', () => {
  it('write the frames of one event-loop turn to the socket together', async () => {
    const nodes = await loopbackPair()
    const [a, b] = nodes
    const writes = { count: 0 }
    const write = Socket.prototype.write
    try {
      let received = 0
      await b.libp2p.handle(TEST_PROTOCOL, (stream) => {
        stream.addEventListener('message', (evt) => {
          received += evt.data.byteLength
        })
      })
      const stream = await a.libp2p.dialProtocol(b.libp2p.getMultiaddrs()[0], TEST_PROTOCOL)
      await nextTurn()
      // Counts every socket write from now on (both nodes share this process).
      Socket.prototype.write = function (this: Socket, ...args: unknown[]) {
        writes.count++
        return (write as (...a: unknown[]) => boolean).apply(this, args)
      } as typeof write
      for (let i = 0; i < FRAMES; i++) stream.send(new Uint8Array(100))
      await waitFor('the frames to arrive', () => received === FRAMES * 100)
      // Without coalescing every frame is a write (Noise adds its own): 68 here, and the
      // receiver's window updates as many; with it 7 (a few turns on either side).
      assert.ok(writes.count <= FRAMES / 2, `${writes.count} socket writes for ${FRAMES} frames`)
    } finally {
      Socket.prototype.write = write
      await stopPair(nodes)
    }
  })
})
