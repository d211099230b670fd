import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Stream } from '@libp2p/interface'
import { waitFor } from '@mtc/testkit'
import { Uint8ArrayList } from 'uint8arraylist'
import { NOISE_NODE_CRYPTO_MIN_BYTES, YAMUX_MAX_STREAM_WINDOW_BYTES } from '../src/constants.ts'
import type { MeshNode } from '../src/node.ts'
import { sodiumCrypto } from '../src/noise-crypto.ts'
import { generatePsk } from '../src/psk.ts'
import { sendWithBackpressure } from '../src/stream-io.ts'
import { loopbackPair, startLoopbackNode, stopPair } from '../src/testing.ts'
import { frameCounts, handleSink, SINK_PROTOCOL, sendToSink, startStockNode } from './stock-node.ts'

const MB = 1024 * 1024

describe('wire compatibility with a stock js-libp2p node', () => {
  it('talks both ways over stock pnet + Noise + per-frame yamux: dials, 12 MB each way, ping', async (t) => {
    const psk = generatePsk()
    const counts = frameCounts()
    const stock = await startStockNode(psk, counts)
    const mesh = await startLoopbackNode({ psk })
    try {
      await handleSink(stock)
      await handleSink(mesh.libp2p)
      // mesh dials stock, then stock dials mesh on a fresh connection
      const toStock = await mesh.libp2p.dialProtocol(stock.getMultiaddrs()[0], SINK_PROTOCOL)
      const up = await sendToSink(toStock, 12 * MB)
      assert.equal(up.received, up.sent, 'mesh → stock')
      await mesh.libp2p.hangUp(stock.peerId)
      await waitFor('the stock node to see the hang-up', () => stock.getConnections().length === 0)
      const toMesh = await stock.dialProtocol(mesh.libp2p.getMultiaddrs()[0], SINK_PROTOCOL)
      const down = await sendToSink(toMesh, 12 * MB)
      assert.equal(down.received, down.sent, 'stock → mesh')
      // and both ways at once over the one connection
      const [x, y] = await Promise.all([
        mesh.libp2p.dialProtocol(stock.peerId, SINK_PROTOCOL).then((s) => sendToSink(s, 4 * MB)),
        stock.dialProtocol(mesh.peerId, SINK_PROTOCOL).then((s) => sendToSink(s, 4 * MB)),
      ])
      assert.equal(x.received, x.sent)
      assert.equal(y.received, y.sent)
      assert.ok((await stock.services.ping.ping(mesh.peerId)) >= 0)
      assert.ok((await mesh.libp2p.services.ping.ping(stock.peerId)) >= 0)
      assert.ok((await mesh.rtt(stock.peerId)) >= 0)

      t.diagnostic(
        `stock sent ${counts.out.dataFrames} data frames, ${counts.out.windowUpdates} window updates;` +
          ` mesh sent ${counts.in.dataFrames} data frames, ${counts.in.windowUpdates} window updates`,
      )
      // The stock peer sends a window update per data frame; ours one per half window.
      assert.ok(
        counts.out.windowUpdates >= counts.in.dataFrames / 2,
        `stock: ${counts.out.windowUpdates} window updates for ${counts.in.dataFrames} data frames`,
      )
      assert.ok(counts.out.dataFrames > 100, `${counts.out.dataFrames} data frames to the mesh`)
      assert.ok(
        counts.in.windowUpdates <= counts.out.dataFrames / 8,
        `mesh: ${counts.in.windowUpdates} window updates for ${counts.out.dataFrames} data frames`,
      )
    } finally {
      await Promise.all([stock.stop(), mesh.stop()])
    }
  })

  it('exchanges messages of every Noise size class both ways (libsodium and Node ciphers)', async (t) => {
    if (sodiumCrypto == null) assert.fail('sodium-native addon did not load')
    const psk = generatePsk()
    const stock = await startStockNode(psk, frameCounts())
    const mesh = await startLoopbackNode({ psk })
    // which plaintext sizes our libsodium path seals and opens (the rest goes to Node's)
    const viaSodium = { seal: [] as number[], open: [] as number[] }
    const { chaCha20Poly1305Encrypt: seal, chaCha20Poly1305Decrypt: open } = sodiumCrypto
    sodiumCrypto.chaCha20Poly1305Encrypt = (p, ...rest) => {
      viaSodium.seal.push(p.byteLength)
      return seal(p, ...rest)
    }
    sodiumCrypto.chaCha20Poly1305Decrypt = (c, ...rest) => {
      viaSodium.open.push(c.byteLength - 16)
      return open(c, ...rest)
    }
    try {
      for (const node of [stock, mesh.libp2p]) {
        await node.handle(ECHO_PROTOCOL, (stream) => {
          stream.addEventListener('message', (evt) => stream.send(evt.data))
          stream.addEventListener('remoteCloseWrite', () => void stream.close())
        })
      }
      const T = NOISE_NODE_CRYPTO_MIN_BYTES
      // a yamux data frame is 12 bytes of header and the payload, one Noise message each
      const sizes = [
        1,
        100,
        300,
        1_188,
        1_200,
        T - 40,
        T - 13,
        T - 12,
        T - 11,
        16_384,
        65_000,
        200_000,
      ]
      for (const [from, to] of [
        [mesh.libp2p, stock.getMultiaddrs()[0]],
        [stock, mesh.libp2p.getMultiaddrs()[0]],
      ] as const) {
        const echo = await from.dialProtocol(to, ECHO_PROTOCOL)
        const replies = echoReplies(echo)
        for (const [i, size] of sizes.entries()) {
          const message = pattern(i * 7, size)
          await sendWithBackpressure(echo, message)
          assert.ok(Buffer.from(await replies.next(size)).equals(message), `echo of ${size} B`)
        }
        await echo.close()
      }
      assert.ok((await stock.services.ping.ping(mesh.peerId)) >= 0)
      const bounds = (xs: number[]) => `${Math.min(...xs)}..${Math.max(...xs)} B`
      t.diagnostic(`libsodium sealed ${viaSodium.seal.length} (${bounds(viaSodium.seal)}),`)
      t.diagnostic(`opened ${viaSodium.open.length} (${bounds(viaSodium.open)})`)
      // both ways, libsodium carried messages the stock peer's Node cipher handles (1,200 B+)
      for (const sizesSeen of [viaSodium.seal, viaSodium.open]) {
        assert.ok(sizesSeen.some((n) => n >= 1_200 && n < T))
        assert.ok(sizesSeen.every((n) => n < T))
      }
    } finally {
      sodiumCrypto.chaCha20Poly1305Encrypt = seal
      sodiumCrypto.chaCha20Poly1305Decrypt = open
      await Promise.all([stock.stop(), mesh.stop()])
    }
  })

  it('does not connect with a different key, either way', async () => {
    const stock = await startStockNode(generatePsk(), frameCounts())
    const mesh = await startLoopbackNode({ psk: generatePsk() })
    try {
      await assert.rejects(
        mesh.libp2p.dial(stock.getMultiaddrs()[0], { signal: AbortSignal.timeout(15_000) }),
      )
      await assert.rejects(
        stock.dial(mesh.libp2p.getMultiaddrs()[0], { signal: AbortSignal.timeout(15_000) }),
      )
      assert.equal(mesh.libp2p.getConnections().length, 0)
      assert.equal(stock.getConnections().length, 0)
    } finally {
      await Promise.all([stock.stop(), mesh.stop()])
    }
  })
})

/** Test protocol: the responder sends `bytes` of a known pattern, then closes. */
const SOURCE_PROTOCOL = '/mtc/test-source/1.0.0'
/** Test protocol: every byte comes back. */
const ECHO_PROTOCOL = '/mtc/test-echo/1.0.0'
/** Round trips of 100 bytes after the bulk transfer (xsalsa20@1.2.0 died within ~250). */
const ECHOES = 1_500

/** Reads a stream's bytes in pieces of the size asked for. */
function echoReplies(stream: Stream): { next(bytes: number): Promise<Uint8Array> } {
  const buffer = new Uint8ArrayList()
  let wake: (() => void) | undefined
  stream.addEventListener('message', (evt) => {
    buffer.append(evt.data)
    wake?.()
  })
  return {
    async next(bytes) {
      while (buffer.byteLength < bytes) {
        await new Promise<void>((resolve, reject) => {
          wake = resolve
          setTimeout(() => reject(new Error('no echo within 10 s')), 10_000).unref()
        })
      }
      const out = buffer.subarray(0, bytes)
      buffer.consume(bytes)
      return out
    },
  }
}

function pattern(at: number, length: number): Uint8Array {
  const out = new Uint8Array(length)
  for (let i = 0; i < length; i++) out[i] = (at + i) % 251
  return out
}

/**
 * Reads a stream slowly: pauses it for `pauseMs` after every `burst` bytes. (Not with
 * `for await`: libp2p's iterator ends at the remote's close-write even while a paused
 * stream still holds unread data; 'end' comes once the buffer is empty.)
 */
async function readSlowly(stream: Stream, burst: number, pauseMs: number): Promise<string> {
  const hash = createHash('sha256')
  let sinceBreak = 0
  let total = 0
  await new Promise<void>((resolve, reject) => {
    stream.addEventListener('message', (evt) => {
      hash.update(evt.data.subarray())
      total += evt.data.byteLength
      sinceBreak += evt.data.byteLength
      if (sinceBreak >= burst && stream.readStatus === 'readable') {
        sinceBreak = 0
        stream.pause()
        setTimeout(() => {
          if (stream.readStatus === 'paused') stream.resume()
        }, pauseMs)
      }
    })
    stream.addEventListener('end', () => resolve())
    stream.addEventListener('close', (evt) => {
      if (evt.error != null) reject(evt.error)
    })
  })
  await stream.close()
  return `${total} ${hash.digest('hex')}`
}

describe('a MeshNode pair under slow readers', () => {
  it('serves many slowly read streams to the end (issue 12 item 3)', async () => {
    const nodes = await loopbackPair()
    const [a, b] = nodes
    const STREAMS = 24
    const BYTES = 3 * MB
    try {
      await b.libp2p.handle(
        SOURCE_PROTOCOL,
        async (stream) => {
          // large writes, as a relay flushing what a slow reader left queued
          for (let at = 0; at < BYTES; at += MB) {
            await sendWithBackpressure(stream, pattern(at, Math.min(MB, BYTES - at)))
          }
          await stream.close()
        },
        { maxInboundStreams: STREAMS },
      )
      await b.libp2p.handle(ECHO_PROTOCOL, (stream) => {
        stream.addEventListener('message', (evt) => stream.send(evt.data))
        stream.addEventListener('remoteCloseWrite', () => void stream.close())
      })
      const expected = `${BYTES} ${createHash('sha256').update(pattern(0, BYTES)).digest('hex')}`
      // b's side of the connection is ready (libp2p resets streams that come earlier)
      await waitFor('b to see the connection', () => b.libp2p.getConnections(a.peerId).length > 0)
      const reads: Promise<string>[] = []
      for (let i = 0; i < STREAMS; i++) {
        const stream = await a.libp2p.dialProtocol(b.peerId, SOURCE_PROTOCOL)
        reads.push(readSlowly(stream, 256 * 1024 + i * 1000, 15))
      }
      const digests = await Promise.all(reads)
      for (const d of digests) assert.equal(d, expected)
      // then many small messages both ways: with xsalsa20@1.2.0 each one grew the shared
      // WebAssembly memory after the large writes, until it threw (and the process died)
      const echo = await a.libp2p.dialProtocol(b.peerId, ECHO_PROTOCOL)
      const replies = echoReplies(echo)
      for (let i = 0; i < ECHOES; i++) {
        const message = pattern(i, 100)
        echo.send(message)
        assert.ok(Buffer.from(await replies.next(100)).equals(message), `echo ${i}`)
      }
      await echo.close()
      assert.equal(a.libp2p.getConnections(b.peerId).length, 1, 'the connection survived')
    } finally {
      await stopPair(nodes)
    }
  })

  it('stops a sender at the window when the reader pauses, and finishes both ways on resume', async (t) => {
    const nodes = await loopbackPair()
    const [a, b] = nodes
    const TOTAL = 48 * MB
    try {
      const paused: Stream[] = []
      const progress = { a: 0, b: 0 }
      // each side pauses the stream it receives on at once, then reads it later
      for (const node of nodes) {
        await node.libp2p.handle(SINK_PROTOCOL, (stream) => {
          stream.pause()
          paused.push(stream)
        })
      }
      const sendAll = async (from: MeshNode, to: MeshNode, key: 'a' | 'b'): Promise<string> => {
        const stream = await from.libp2p.dialProtocol(to.peerId, SINK_PROTOCOL)
        const hash = createHash('sha256')
        for (let at = 0; at < TOTAL; at += 64 * 1024) {
          const data = pattern(at, 64 * 1024)
          hash.update(data)
          await sendWithBackpressure(stream, data)
          progress[key] = at + data.byteLength
        }
        await stream.close()
        return `${TOTAL} ${hash.digest('hex')}`
      }
      const sending = [sendAll(a, b, 'a'), sendAll(b, a, 'b')]
      await waitFor('both streams opened', () => paused.length === 2)
      // the senders stall: nothing is read, so at most a window (plus buffers) goes out
      let last = { ...progress }
      for (let i = 0; i < 50; i++) {
        await sleep(200)
        if (progress.a === last.a && progress.b === last.b) break
        last = { ...progress }
      }
      t.diagnostic(
        `sent to paused readers: ${progress.a} and ${progress.b} bytes; buffered there: ` +
          `${paused.map((s) => s.readBufferLength).join(' and ')} bytes`,
      )
      for (const p of [progress.a, progress.b]) {
        assert.ok(p <= YAMUX_MAX_STREAM_WINDOW_BYTES, `${p} bytes sent to a paused reader`)
      }
      for (const s of paused) {
        assert.ok(s.readBufferLength <= YAMUX_MAX_STREAM_WINDOW_BYTES, `${s.readBufferLength}`)
      }
      // the readers resume: everything arrives, intact
      const reading = paused.map(async (s) => {
        const read = readSlowly(s, Number.POSITIVE_INFINITY, 0)
        s.resume()
        return await read
      })
      const sent = await Promise.all(sending)
      const received = await Promise.all(reading)
      assert.deepEqual(received.sort(), sent.sort())
    } finally {
      await stopPair(nodes)
    }
  })
})
