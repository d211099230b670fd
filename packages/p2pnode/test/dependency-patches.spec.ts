import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FrameHeader } from '@chainsafe/libp2p-yamux'
import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream'
import { AbortError, type PeerId } from '@libp2p/interface'
import { defaultLogger } from '@libp2p/logger'
import { LengthPrefixedDecoder, Queue } from '@libp2p/utils'
import { waitFor } from '@mtc/testkit'
import { Uint8ArrayList } from 'uint8arraylist'
import { findProviders, provide } from '../src/discovery.ts'
import { loopbackPair, stopPair } from '../src/testing.ts'

/** Noise's frame length: 2 bytes big-endian; throws a RangeError when short, as Noise's does. */
function uint16Length(calls: number[]) {
  return (data: Uint8ArrayList | Uint8Array): number => {
    calls.push(data.byteLength)
    if (data.byteLength < 2) throw new RangeError('Could not decode int16BE')
    return data instanceof Uint8Array ? (data[0] << 8) | data[1] : data.getUint16(0)
  }
}

function frame(payload: number[]): Uint8Array {
  return Uint8Array.from([payload.length >> 8, payload.length & 0xff, ...payload])
}

// patches/@libp2p__utils@7.4.1.patch: every encrypted chunk goes through this decoder,
// and an exception per chunk (with its stack trace) cost ~5 µs each.
describe('LengthPrefixedDecoder (patched)', () => {
  it('stops at an empty buffer instead of asking the length decoder to throw', () => {
    const calls: number[] = []
    const decoder = new LengthPrefixedDecoder({
      lengthDecoder: uint16Length(calls),
      encodingLength: () => 2,
    })
    const out = [...decoder.decode(frame([1, 2, 3]))].map((b) => [...b.subarray()])
    assert.deepEqual(out, [[1, 2, 3]])
    assert.deepEqual(calls, [5], 'the length decoder never sees an empty buffer')
  })

  it('still waits for a split length prefix and a split body', () => {
    const calls: number[] = []
    const decoder = new LengthPrefixedDecoder({
      lengthDecoder: uint16Length(calls),
      encodingLength: () => 2,
    })
    const whole = Uint8Array.from([...frame([7, 8]), ...frame([9])])
    const got: number[][] = []
    for (const part of [whole.subarray(0, 1), whole.subarray(1, 3), whole.subarray(3)]) {
      for (const b of decoder.decode(part)) got.push([...b.subarray()])
    }
    assert.deepEqual(got, [[7, 8], [9]])
  })
})

/** Yamux frame types (frame.js): only their numbers are exported as types. */
const YAMUX_DATA = 0
const YAMUX_WINDOW_UPDATE = 1
const KIB = 1024

/** An established yamux stream fed by hand, recording the frames it sends. */
function yamuxStream(window: number) {
  const sent: FrameHeader[] = []
  const stream = new YamuxStream({
    id: '1',
    streamId: 1,
    state: StreamState.Established,
    direction: 'inbound',
    log: defaultLogger().forComponent('test:yamux'),
    getRTT: () => -1, // no window growth: the window stays `window`
    initialStreamWindowSize: window,
    maxStreamWindowSize: window,
    sendFrame: (header) => {
      sent.push(header)
      return true
    },
  })
  stream.addEventListener('message', () => {}) // consume, so nothing piles up unread
  const receive = (bytes: number): void =>
    stream.handleData({
      header: { type: YAMUX_DATA, flag: 0, streamID: 1, length: bytes },
      data: new Uint8ArrayList(new Uint8Array(bytes)),
    } as unknown as Parameters<YamuxStream['handleData']>[0])
  const updates = (): FrameHeader[] => sent.filter((h) => h.type === YAMUX_WINDOW_UPDATE)
  return { stream, receive, updates }
}

// patches/@chainsafe__libp2p-yamux@8.0.1.patch: a window update per half window (go-yamux),
// not one per data frame (and a Noise message and a syscall with each).
describe('YamuxStream window updates (patched)', () => {
  it('sends one window update per half window consumed, not one per data frame', () => {
    const { receive, updates } = yamuxStream(256 * KIB)
    for (let i = 0; i < 64; i++) receive(16 * KIB) // 1 MiB in 64 frames
    // stock yamux: 64 updates of 16 KiB each
    assert.equal(updates().length, 8)
    for (const u of updates()) assert.equal(u.length, 128 * KIB)
    assert.equal(
      updates().reduce((sum, u) => sum + u.length, 0),
      1024 * KIB,
      'every byte is returned',
    )
  })

  it('never lets the window run dry: the sender always has half of it left or more', () => {
    const { receive, updates } = yamuxStream(256 * KIB)
    let credit = 256 * KIB // what the sender may still send
    for (let i = 0; i < 200; i++) {
      const size = Math.min(credit, 1 + ((i * 7919) % (40 * KIB)))
      receive(size)
      credit -= size
      credit += updates().reduce((sum, u) => sum + u.length, 0)
      updates().splice(0)
      assert.ok(credit >= 128 * KIB, `credit ${credit} after frame ${i}`)
    }
  })

  it('returns what a paused stream held back when it resumes, however little', () => {
    const { stream, receive, updates } = yamuxStream(256 * KIB)
    receive(16 * KIB)
    stream.pause()
    receive(16 * KIB)
    assert.equal(updates().length, 0)
    stream.resume()
    assert.equal(updates().length, 1)
    assert.equal(updates()[0].length, 32 * KIB)
  })
})

/** @chainsafe/libp2p-noise's encrypted stream (not exported: found beside its entry point). */
async function noiseMessageStream(decrypt: (ciphertext: unknown, dst?: Uint8Array) => Uint8Array) {
  const utils = new URL('utils.js', import.meta.resolve('@chainsafe/libp2p-noise'))
  const { toMessageStream } = (await import(utils.href)) as {
    toMessageStream(
      connection: unknown,
      handshake: unknown,
    ): {
      decrypt(chunk: Uint8Array | Uint8ArrayList): Uint8ArrayList
    }
  }
  const connection = new EventTarget() as EventTarget & Record<string, unknown>
  connection.log = defaultLogger().forComponent('test:noise')
  connection.direction = 'outbound'
  return toMessageStream(connection, { decrypt })
}

// patches/@chainsafe__libp2p-noise@17.0.0.patch: a Noise message (up to 65,537 bytes on the
// wire) mostly spans two 64 KiB socket reads; noise copied it whole to offer the crypto an
// output buffer, which Node's ChaCha20-Poly1305 (1,200 B and up) never uses.
describe('Noise decryption (patched)', () => {
  it('offers no output buffer for a message split across reads, instead of copying it', async () => {
    const dsts: (Uint8Array | undefined)[] = []
    const stream = await noiseMessageStream((_ciphertext, dst) => {
      dsts.push(dst)
      return new Uint8Array(4)
    })
    const whole = new Uint8Array(20)
    stream.decrypt(new Uint8ArrayList(whole.subarray(0, 7), whole.subarray(7)))
    assert.deepEqual(dsts, [undefined])
  })

  it('still decrypts in place where the message is one buffer (no copy needed)', async () => {
    const dsts: (Uint8Array | undefined)[] = []
    const stream = await noiseMessageStream((_ciphertext, dst) => {
      dsts.push(dst)
      return dst ?? new Uint8Array(4)
    })
    const whole = new Uint8Array(20)
    stream.decrypt(whole)
    stream.decrypt(new Uint8ArrayList(whole))
    assert.equal(dsts.length, 2)
    for (const dst of dsts) {
      assert.equal(dst?.buffer, whole.buffer, 'a view of the message itself')
      assert.equal(dst?.byteLength, 20 - 16, 'the message less its tag')
    }
  })
})

// patches/@libp2p__utils@7.4.1.patch: every send() that empties a stream's write buffer
// dispatched an 'idle' event, at each layer of a connection (yamux stream, Noise, pnet,
// TCP): a CustomEvent and an EventTarget dispatch per write and layer, heard only by a
// close() waiting for the buffer to empty.
describe("AbstractMessageStream 'idle' (patched)", () => {
  /** The types of the events `stream` dispatches, in order. */
  function dispatched(stream: YamuxStream): string[] {
    const types: string[] = []
    const dispatch = stream.dispatchEvent.bind(stream)
    stream.dispatchEvent = (evt: Event) => {
      types.push(evt.type)
      return dispatch(evt)
    }
    return types
  }

  it('builds no idle event nobody listens to', () => {
    const { stream } = yamuxStream(256 * KIB)
    const types = dispatched(stream)
    for (let i = 0; i < 10; i++) assert.equal(stream.send(new Uint8Array(100)), true)
    // stock: ten 'idle' events
    assert.deepEqual(
      types.filter((t) => t === 'idle'),
      [],
    )
  })

  it('still tells a listener, and close() still waits for the buffer to empty', async () => {
    const { stream } = yamuxStream(256 * KIB)
    let heard = 0
    stream.addEventListener('idle', () => heard++)
    for (let i = 0; i < 3; i++) stream.send(new Uint8Array(100))
    assert.equal(heard, 3)
    await stream.close({ signal: AbortSignal.timeout(5_000) })
    assert.equal(stream.writeStatus, 'closed')
  })
})

// The same patch: a finished queue job built an AbortError (with its stack trace) for
// every caller waiting on it, only for reject() to ignore it: the job had settled them.
describe('Queue jobs (patched)', () => {
  it('build no AbortError for callers a finished job already settled', async () => {
    let built = 0
    // AbortError's constructor assigns this.name: a setter on its prototype sees each one.
    Object.defineProperty(AbortError.prototype, 'name', {
      configurable: true,
      set(this: Error, value: string) {
        built++
        Object.defineProperty(this, 'name', { value, writable: true, configurable: true })
      },
    })
    try {
      const queue = new Queue<number>({ concurrency: 2 })
      const ok = await Promise.all(Array.from({ length: 20 }, (_, i) => queue.add(async () => i)))
      assert.deepEqual(
        ok,
        Array.from({ length: 20 }, (_, i) => i),
      )
      const failed = await queue
        .add(async () => {
          throw new Error('boom')
        })
        .catch((err: Error) => err.message)
      assert.equal(failed, 'boom')
      // stock: 21, one per job
      assert.equal(built, 0)
      // An aborted caller is still told, with an AbortError.
      const controller = new AbortController()
      const waiting = queue.add(() => new Promise<number>(() => {}), {
        signal: controller.signal,
      })
      controller.abort()
      await assert.rejects(waiting, { name: 'AbortError' })
    } finally {
      delete (AbortError.prototype as { name?: string }).name
    }
  })
})

/** kad-dht's routing table, as far as these tests look into it. */
interface RoutingTableInternals {
  size: number
  kb: { verify: (contact: { peerId: PeerId }, options?: unknown) => Promise<boolean> }
}

// patches/@libp2p__kad-dht@16.4.5.patch: a provider lookup on a node that holds provider
// records answers first "from" itself (its local store), and every answer's sender is
// offered to the routing table: our own peer was pinged as a new contact on every lookup
// ("Can not dial self": an error, a queue job, a timeout signal), never added, so again
// on the next lookup, i.e. about once a second on a proxy.
describe('kad-dht routing table (patched)', () => {
  it('never pings its own peer as a new contact, and still adds the others', async () => {
    const nodes = await loopbackPair()
    try {
      const [a] = nodes
      const table = (a.libp2p.services.dht as unknown as { routingTable: RoutingTableInternals })
        .routingTable
      const verify = table.kb.verify
      const verified: string[] = []
      table.kb.verify = (contact, options) => {
        verified.push(contact.peerId.toString())
        return verify(contact, options)
      }
      // Once b is a DHT server a knows of (kad-dht's topology, after identify).
      await waitFor('provide', async () => {
        await provide(a.libp2p, 'service', 'self-test', { signal: AbortSignal.timeout(3_000) })
        return true
      })
      verified.splice(0) // what the lookups below do
      for (let i = 0; i < 3; i++) {
        const found = await findProviders(a.libp2p, 'service', 'self-test', {
          signal: AbortSignal.timeout(5_000),
        })
        assert.deepEqual(found, [], 'a finds no provider but itself, which it skips')
      }
      await sleep(200) // routing-table updates run in a queue after the lookup
      // stock: one ping of itself per lookup
      assert.equal(verified.filter((p) => p === a.peerId.toString()).length, 0)
      assert.ok(table.size >= 1, 'b is in the routing table')
    } finally {
      await stopPair(nodes)
    }
  })
})
