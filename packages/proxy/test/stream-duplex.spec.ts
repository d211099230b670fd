import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Stream } from '@libp2p/interface'
import { generatePsk, type MeshNode } from '@mtc/p2pnode'
import { startLoopbackNode } from '@mtc/p2pnode/testing'
import { waitFor } from '@mtc/testkit'
import { StreamDuplex } from '../src/stream-duplex.ts'
import { randomBody } from './fixture.ts'

const PROTOCOL = '/mtc-test/duplex/1.0.0'
/** A writer has stalled when this many checks this far apart saw no new byte. */
const STALL_CHECKS = 5
const STALL_CHECK_MS = 100
/** setTimeout's idle time in the timeout test, and the timer slack allowed below it. */
const IDLE_MS = 150
const TIMER_SLACK_MS = 10
const MB = 1024 * 1024
const psk = generatePsk()
let a: MeshNode
let b: MeshNode
/** Inbound streams on `a`, in arrival order. */
const inbound: Array<(s: Stream) => void> = []

before(async () => {
  a = await startLoopbackNode({ role: 'proxy-test', psk })
  b = await startLoopbackNode({ role: 'proxy-test', psk })
  await a.libp2p.handle(PROTOCOL, (stream) => {
    const next = inbound.shift()
    if (next == null) stream.abort(new Error('unexpected stream'))
    else next(stream)
  })
  await b.libp2p.dial(a.libp2p.getMultiaddrs()[0])
})

after(async () => {
  await b?.stop()
  await a?.stop()
})

/** A connected pair: `client` on b, `server` on a. */
async function pair(allowHalfOpen = true): Promise<{ client: StreamDuplex; server: StreamDuplex }> {
  const accepted = new Promise<Stream>((resolve) => inbound.push(resolve))
  const out = await b.libp2p.dialProtocol(a.peerId, PROTOCOL)
  const client = new StreamDuplex(out, { allowHalfOpen })
  const server = new StreamDuplex(await accepted, { allowHalfOpen })
  return { client, server }
}

/** Hashes everything written; `delayMs` per chunk makes a slow consumer. */
function hashingSink(delayMs = 0): {
  writable: Writable
  digest: () => string
  bytes: () => number
} {
  const hash = createHash('sha256')
  let n = 0
  const writable = new Writable({
    highWaterMark: 64 * 1024,
    write(chunk: Buffer, _enc, cb) {
      hash.update(chunk)
      n += chunk.byteLength
      if (delayMs > 0) setTimeout(cb, delayMs)
      else cb()
    },
  })
  return { writable, digest: () => hash.digest('hex'), bytes: () => n }
}

describe('StreamDuplex (libp2p stream as a Node Duplex)', () => {
  it('a remote that writes and closes at once: its bytes, then the end (even when they came during negotiation)', async () => {
    // The listener answers and closes before the dialer finished protocol negotiation:
    // the dialer's stream may have ended already, holding bytes the negotiation read
    // ahead and put back. Repeated: the timing varies.
    for (let i = 0; i < 20; i++) {
      inbound.push((stream) => {
        stream.send(new TextEncoder().encode('-refused\n'))
        void stream.close()
      })
      const out = await b.libp2p.dialProtocol(a.peerId, PROTOCOL)
      const client = new StreamDuplex(out, { allowHalfOpen: false })
      const chunks: Buffer[] = []
      const errors: Error[] = []
      client.on('error', (err) => errors.push(err))
      client.on('data', (c: Buffer) => chunks.push(c))
      const ended = await Promise.race([
        once(client, 'end').then(() => true),
        once(client, 'close').then(() => false),
      ])
      assert.deepEqual(errors, [], `round ${i}`)
      assert.ok(ended, `round ${i}: no end`)
      assert.equal(Buffer.concat(chunks).toString(), '-refused\n', `round ${i}`)
      assert.ok(client.remoteEnded, `round ${i}: a FIN`)
      client.destroy()
    }
  })

  it('carries 50 MB each way at once, byte-exact', async () => {
    const { client, server } = await pair()
    const up = randomBody(50 * MB)
    const down = randomBody(50 * MB)
    const atServer = hashingSink()
    const atClient = hashingSink()
    await Promise.all([
      pipeline(up.stream, client),
      pipeline(server, atServer.writable),
      pipeline(down.stream, server),
      pipeline(client, atClient.writable),
    ])
    assert.equal(atServer.bytes(), 50 * MB)
    assert.equal(atClient.bytes(), 50 * MB)
    assert.equal(atServer.digest(), up.sha256())
    assert.equal(atClient.digest(), down.sha256())
  })

  it('holds a fast writer back while the reader is slow (no unbounded buffering, no reset)', async () => {
    const { client, server } = await pair()
    const total = 24 * MB
    const up = randomBody(total)
    let produced = 0
    up.stream.on('data', (c: Buffer) => {
      produced += c.byteLength
    })
    const sink = hashingSink()
    // The server does not read at all until the writer has stalled: no byte for 0.5 s
    // (however long the machine takes to get there; bounded by 60 s).
    const sending = pipeline(up.stream, client)
    let last = -1
    let still = 0
    const heldBack = await waitFor(
      'the writer to stall',
      () => {
        still = produced === last ? still + 1 : 0
        last = produced
        return still >= STALL_CHECKS ? produced : undefined
      },
      { timeoutMs: 60_000, intervalMs: STALL_CHECK_MS },
    )
    // Buffered at most: the Node buffers on both sides and one (grown) yamux window.
    assert.ok(heldBack < 20 * MB, `${heldBack} bytes left the writer while nobody read`)
    assert.ok(client.stream.status === 'open' && server.stream.status === 'open')
    await Promise.all([sending, pipeline(server, sink.writable)])
    assert.equal(sink.bytes(), total)
    assert.equal(sink.digest(), up.sha256())
  })

  it('keeps pace with a slow consumer downstream of it', async () => {
    const { client, server } = await pair()
    const up = randomBody(2 * MB)
    // ≥ 32 chunks of ≤ 64 KiB × 20 ms: the consumer takes ≥ 0.64 s, the writer waits for it.
    const sink = hashingSink(20)
    const started = performance.now()
    await Promise.all([pipeline(up.stream, client), pipeline(server, sink.writable)])
    assert.ok(performance.now() - started > 600)
    assert.equal(sink.digest(), up.sha256())
  })

  it('propagates half-close: end() ends the remote readable, the other way stays open', async () => {
    const { client, server } = await pair()
    client.end('request')
    const chunks: Buffer[] = []
    server.on('data', (c: Buffer) => chunks.push(c))
    await once(server, 'end')
    assert.equal(Buffer.concat(chunks).toString(), 'request')
    // The server still answers after the client's end.
    const reply: Buffer[] = []
    client.on('data', (c: Buffer) => reply.push(c))
    server.end('response')
    await Promise.all([once(client, 'close'), once(server, 'close')])
    assert.equal(Buffer.concat(reply).toString(), 'response')
    assert.equal(client.stream.status, 'closed')
    assert.equal(server.stream.status, 'closed')
  })

  it('without allowHalfOpen, ends its own side when the remote ends (as sockets under HTTP)', async () => {
    const { client, server } = await pair(false)
    client.end()
    server.resume()
    client.resume()
    await Promise.all([once(client, 'close'), once(server, 'close')])
    assert.equal(server.stream.status, 'closed')
  })

  it('destroy(err) aborts the stream and the remote side errors', async () => {
    const { client, server } = await pair()
    client.write('some')
    await once(server, 'readable')
    const failed = once(server, 'error')
    const own = once(client, 'error')
    client.destroy(new Error('client gave up'))
    assert.equal(((await own) as [Error])[0].message, 'client gave up')
    const [err] = (await failed) as [Error & { code?: string }]
    assert.equal(err.code, 'ECONNRESET')
    assert.equal(client.stream.status, 'aborted')
    await waitFor('server stream reset', () => server.stream.status === 'reset')
  })

  it('an aborted libp2p stream destroys the duplex with an error', async () => {
    const { client, server } = await pair()
    const failed = once(client, 'error')
    const own = once(server, 'error')
    server.stream.abort(new Error('boom'))
    assert.match(((await own) as [Error])[0].message, /aborted: boom/)
    const [err] = (await failed) as [Error]
    assert.match(err.message, /reset/)
    assert.ok(client.destroyed)
  })

  it('reads the first bytes and the end a remote sent at once, as it accepted the stream', async () => {
    // The remote writes and closes its side as soon as it accepts (an instance refusing
    // with its preface): they may come with the protocol negotiation, which reads ahead,
    // sees the end, and puts the bytes back after it. The bytes come, then the end.
    for (let i = 0; i < 20; i++) {
      inbound.push((stream) => {
        stream.send(new TextEncoder().encode(`hello ${i}\n`))
        void stream.close()
      })
      const out = await b.libp2p.dialProtocol(a.peerId, PROTOCOL)
      // The end and the bytes are in before anyone reads (what a reader busy elsewhere sees).
      await waitFor('the remote end', () => out.remoteWriteStatus === 'closed', {
        timeoutMs: 5_000,
        intervalMs: 5,
      })
      const client = new StreamDuplex(out, { allowHalfOpen: false })
      const chunks: Buffer[] = []
      client.on('data', (c: Buffer) => chunks.push(c))
      const outcome = await new Promise<string>((resolve) => {
        client.once('end', () => resolve('end'))
        client.once('error', (err) => resolve(`error: ${err.message}`))
      })
      assert.equal(outcome, 'end', `stream ${i}`)
      assert.equal(Buffer.concat(chunks).toString(), `hello ${i}\n`, `stream ${i}`)
      client.destroy()
    }
  })

  it('emits timeout after idling, like net.Socket.setTimeout', async () => {
    const { client, server } = await pair()
    let firedAt: number | undefined
    let lastDataAt = performance.now()
    client.on('data', () => {
      lastDataAt = performance.now()
    })
    client.setTimeout(IDLE_MS, () => {
      firedAt ??= performance.now()
    })
    // Activity during the idle time starts it again: the timeout comes IDLE_MS after the
    // last byte, not after setTimeout (judged from when the byte came, not from sleeps).
    await sleep(IDLE_MS * 0.6)
    server.write('x')
    await waitFor('idle timeout', () => firedAt, { timeoutMs: 10_000, intervalMs: 20 })
    assert.ok(
      firedAt! - lastDataAt >= IDLE_MS - TIMER_SLACK_MS,
      `timeout ${(firedAt! - lastDataAt).toFixed(0)} ms after the last byte`,
    )
    client.setTimeout(0)
    client.destroy()
    server.destroy()
  })
})
