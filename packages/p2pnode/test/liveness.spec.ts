import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { afterEach, describe, it } from 'node:test'
import type { Stream } from '@libp2p/interface'
import { RTT_MAX_STREAMS_PER_CONNECTION, RTT_PROTOCOL } from '../src/constants.ts'
import { pingConnection, receivedBytes, SilenceClock, SlowEchoHistory } from '../src/liveness.ts'
import type { MeshNode, MeshNodeInit } from '../src/node.ts'
import { generatePsk } from '../src/psk.ts'
import { probeRtt } from '../src/rtt.ts'
import { sendWithBackpressure } from '../src/stream-io.ts'
import { loopbackNode } from '../src/testing.ts'

const SINK_PROTOCOL = '/mtc/test-sink/1.0.0'

let nodes: MeshNode[] = []
afterEach(async () => {
  await Promise.all(nodes.map((n) => n.stop()))
  nodes = []
})

/** Two started nodes on loopback with one connection from `a` to `b`. */
async function pair(
  liveness: MeshNodeInit['liveness'],
  livenessOfB = liveness,
): Promise<[MeshNode, MeshNode]> {
  const psk = generatePsk()
  const make = async (liveness: MeshNodeInit['liveness']): Promise<MeshNode> => {
    const node = await loopbackNode({ psk, liveness })
    nodes.push(node)
    await node.start()
    return node
  }
  const a = await make(liveness)
  const b = await make(livenessOfB)
  await a.libp2p.dial(b.libp2p.getMultiaddrs()[0])
  return [a, b]
}

/** `b` counts what arrives on SINK_PROTOCOL streams; resolves each stream's total at its end. */
async function sink(b: MeshNode): Promise<{ totals: Promise<number>[] }> {
  const out = { totals: [] as Promise<number>[] }
  await b.libp2p.handle(SINK_PROTOCOL, (stream) => {
    out.totals.push(
      (async () => {
        let n = 0
        for await (const chunk of stream) n += chunk.byteLength
        await stream.close()
        return n
      })(),
    )
  })
  return out
}

/** A stream handler that never answers and keeps the stream until the other side ends it. */
function holdOpen(stream: Stream): Promise<void> {
  return new Promise((resolve) => stream.addEventListener('close', () => resolve()))
}

describe('liveness and RTT probes', () => {
  it('a transfer survives RTT probes running while the connection is pinged', async () => {
    // A liveness ping every 50 ms and probes back to back from both sides: before the
    // fix, libp2p's monitor pinged on the probes' protocol (one outbound stream per
    // connection) and aborted the connection when the two collided.
    const [a, b] = await pair({ busyIntervalMs: 50, timeoutMs: 5_000 })
    const received = await sink(b)
    const conn = a.libp2p.getConnections(b.peerId)[0]
    const stop = AbortSignal.timeout(3_000)
    let probes = 0
    let probeErrors = 0
    const prober = async (from: MeshNode, to: MeshNode): Promise<void> => {
      while (!stop.aborted && conn.status === 'open') {
        try {
          await probeRtt(from.libp2p, to.peerId, { samples: 3 })
          probes++
        } catch {
          probeErrors++
        }
      }
    }
    const transfer = async (): Promise<number> => {
      const stream: Stream = await a.libp2p.dialProtocol(b.peerId, SINK_PROTOCOL)
      const chunk = randomBytes(64 * 1024)
      let sent = 0
      while (!stop.aborted) {
        await sendWithBackpressure(stream, chunk)
        sent += chunk.byteLength
      }
      await stream.close()
      return sent
    }
    const [sent] = await Promise.all([transfer(), prober(a, b), prober(a, b), prober(b, a)])
    assert.equal(conn.status, 'open', 'the connection was not aborted')
    assert.equal(await received.totals[0], sent, 'every byte sent arrived')
    assert.ok(sent > 1024 * 1024, `the transfer ran: ${sent} bytes`)
    assert.ok(probes > 3, `probes ran alongside: ${probes} (${probeErrors} failed)`)
    assert.equal(probeErrors, 0)
    console.log(`# ${sent} bytes sent, ${probes} probes of 3 pings alongside`)
  })

  it('a ping that cannot start for a local stream limit leaves the connection open', async () => {
    const [a, b] = await pair({ busyIntervalMs: 60_000 })
    // `b` holds every echo stream open without answering.
    await b.libp2p.unhandle(RTT_PROTOCOL)
    await b.libp2p.handle(RTT_PROTOCOL, holdOpen, { maxInboundStreams: 1_000 })
    const conn = a.libp2p.getConnections(b.peerId)[0]
    // One after the other: yamux resets streams opened faster than the peer acknowledges.
    const held: Stream[] = []
    for (let i = 0; i < RTT_MAX_STREAMS_PER_CONNECTION; i++) {
      held.push(await conn.newStream(RTT_PROTOCOL, { runOnLimitedConnection: true }))
    }
    const stop = new AbortController()
    const result = await pingConnection(conn, { silenceMs: 2_000 }, stop.signal)
    assert.equal(result.verdict, 'skipped', `${result.error?.name}: ${result.error?.message}`)
    assert.equal(result.error?.name, 'TooManyOutboundProtocolStreamsError')
    assert.equal(conn.status, 'open')
    for (const s of held) s.abort(new Error('test over'))
  })

  it('a connection on which nothing arrives after a ping is aborted after the timeout', async () => {
    // `b` sends nothing of its own (its pings are an hour apart); it echoes a's pings until
    // it hangs, then swallows them.
    const [a, b] = await pair(
      { busyIntervalMs: 100, idleIntervalMs: 100, timeoutMs: 500 },
      { busyIntervalMs: 3_600_000 },
    )
    const conn = a.libp2p.getConnections(b.peerId)[0]
    let hung = false
    await b.libp2p.unhandle(RTT_PROTOCOL)
    await b.libp2p.handle(
      RTT_PROTOCOL,
      async (stream) => {
        if (hung) return holdOpen(stream)
        for await (const chunk of stream) stream.send(chunk)
        await stream.close().catch(() => {})
      },
      { maxInboundStreams: 1_000 },
    )
    // The peer answered once (a peer never heard from gets longer: see below).
    const answered = AbortSignal.timeout(10_000)
    while (conn.rtt == null && !answered.aborted) await new Promise((r) => setTimeout(r, 20))
    assert.notEqual(conn.rtt, undefined, 'the first liveness ping was echoed')
    hung = true
    const t0 = performance.now()
    const deadline = AbortSignal.timeout(10_000)
    while (conn.status === 'open' && !deadline.aborted) {
      await new Promise((r) => setTimeout(r, 20))
    }
    const ms = performance.now() - t0
    assert.notEqual(conn.status, 'open', 'the silent connection was aborted')
    assert.ok(ms >= 400, `not before the timeout: ${ms.toFixed(0)} ms`)
  })

  it('a peer without the echo protocol (an older release) is probed over ping and kept', async () => {
    const [a, b] = await pair({ busyIntervalMs: 50, timeoutMs: 2_000 })
    await b.libp2p.unhandle(RTT_PROTOCOL)
    const conn = a.libp2p.getConnections(b.peerId)[0]
    const rtt = await probeRtt(a.libp2p, b.peerId, { samples: 2 })
    assert.ok(rtt > 0 && rtt < 1, `rtt over /ipfs/ping: ${rtt} s`)
    const result = await pingConnection(conn, { silenceMs: 2_000 }, new AbortController().signal)
    assert.equal(result.verdict, 'alive', 'a refused protocol proves the peer is there')
    await new Promise((r) => setTimeout(r, 300))
    assert.equal(conn.status, 'open')
  })

  it('sees the bytes received on a connection (the counter liveness relies on)', async () => {
    const [a, b] = await pair({ busyIntervalMs: 3_600_000 })
    const conn = a.libp2p.getConnections(b.peerId)[0]
    const before = receivedBytes(conn)
    assert.equal(typeof before, 'number', 'libp2p still exposes the TCP socket of a connection')
    await probeRtt(a.libp2p, b.peerId)
    const after = receivedBytes(conn) ?? 0
    assert.ok(after > (before ?? 0), `${before} → ${after} bytes`)
  })

  it('a busy connection whose echo is late is kept while bytes keep arriving', async () => {
    // `b` echoes a's liveness pings 1.5 s late and sends nothing of its own but the
    // window updates of a transfer from `a`: a ping queued behind bulk data on a slow
    // link looks like this. Silence of 500 ms would cut it; bytes keep arriving.
    const [a, b] = await pair(
      { busyIntervalMs: 100, timeoutMs: 500 },
      { busyIntervalMs: 3_600_000 },
    )
    await b.libp2p.unhandle(RTT_PROTOCOL)
    await b.libp2p.handle(
      RTT_PROTOCOL,
      async (stream) => {
        for await (const chunk of stream) {
          await new Promise((r) => setTimeout(r, 1_500))
          stream.send(chunk)
        }
        await stream.close().catch(() => {})
      },
      { maxInboundStreams: 1_000 },
    )
    const received = await sink(b)
    const conn = a.libp2p.getConnections(b.peerId)[0]
    const stream = await a.libp2p.dialProtocol(b.peerId, SINK_PROTOCOL)
    const chunk = randomBytes(64 * 1024)
    const stop = AbortSignal.timeout(3_000)
    let sent = 0
    while (!stop.aborted) {
      await sendWithBackpressure(stream, chunk)
      sent += chunk.byteLength
      // A steady flow, not a burst: window updates come back all along.
      await new Promise((r) => setTimeout(r, 5))
    }
    await stream.close()
    assert.equal(conn.status, 'open')
    assert.equal(await received.totals[0], sent)
  })

  it('a peer whose echoes slow down step by step (a loaded host) is kept', async () => {
    // `b` echoes each ping 100 ms later than the one before, up to 900 ms, and sends
    // nothing else: a fixed 400 ms silence limit would cut it at the fifth ping. Each
    // slower echo raises the limit (4 × the recent slowest echo), as a peer that answers
    // slowly is not a dead one.
    const [a, b] = await pair(
      { busyIntervalMs: 100, idleIntervalMs: 100, timeoutMs: 400 },
      { busyIntervalMs: 3_600_000 },
    )
    await b.libp2p.unhandle(RTT_PROTOCOL)
    let echoed = 0
    await b.libp2p.handle(
      RTT_PROTOCOL,
      async (stream) => {
        for await (const chunk of stream) {
          await new Promise((r) => setTimeout(r, 100 * Math.min(echoed + 1, 9)))
          echoed++
          stream.send(chunk)
        }
        await stream.close().catch(() => {})
      },
      { maxInboundStreams: 1_000 },
    )
    const conn = a.libp2p.getConnections(b.peerId)[0]
    const deadline = AbortSignal.timeout(30_000)
    while (echoed < 10 && conn.status === 'open' && !deadline.aborted) {
      await new Promise((r) => setTimeout(r, 50))
    }
    assert.equal(conn.status, 'open', `cut after ${echoed} echoes`)
    assert.ok(echoed >= 10, `${echoed} echoes within 30 s`)
  })
})

describe('liveness of peers just met', () => {
  /** `b` echoes a's liveness pings after `delayMs(n)` for the n-th echo, and sends nothing else. */
  async function echoAfter(b: MeshNode, delayMs: (n: number) => number): Promise<() => number> {
    let echoed = 0
    await b.libp2p.unhandle(RTT_PROTOCOL)
    await b.libp2p.handle(
      RTT_PROTOCOL,
      async (stream) => {
        for await (const chunk of stream) {
          await new Promise((r) => setTimeout(r, delayMs(echoed)))
          echoed++
          stream.send(chunk)
        }
        await stream.close().catch(() => {})
      },
      { maxInboundStreams: 1_000 },
    )
    return () => echoed
  }

  it('a new connection whose first echo is slow (a process starting) is kept', async () => {
    // The first echo comes after 1.2 s, three timeouts of silence; the next ones at once.
    // A connection nothing is known of gets SLOW_PEER_FACTOR timeouts until its first echo.
    const [a, b] = await pair(
      { busyIntervalMs: 100, idleIntervalMs: 100, timeoutMs: 400 },
      { busyIntervalMs: 3_600_000 },
    )
    const echoes = await echoAfter(b, (n) => (n === 0 ? 1_200 : 0))
    const conn = a.libp2p.getConnections(b.peerId)[0]
    const deadline = AbortSignal.timeout(30_000)
    while (echoes() < 5 && conn.status === 'open' && !deadline.aborted) {
      await new Promise((r) => setTimeout(r, 50))
    }
    assert.equal(conn.status, 'open', `cut after ${echoes()} echoes`)
    assert.ok(echoes() >= 5, `${echoes()} echoes within 30 s`)
  })

  it('a peer that never answers is cut after the longest silence allowed', async () => {
    const [a, b] = await pair(
      { busyIntervalMs: 100, idleIntervalMs: 100, timeoutMs: 400 },
      { busyIntervalMs: 3_600_000 },
    )
    await b.libp2p.unhandle(RTT_PROTOCOL)
    await b.libp2p.handle(RTT_PROTOCOL, holdOpen, { maxInboundStreams: 1_000 })
    const conn = a.libp2p.getConnections(b.peerId)[0]
    const t0 = performance.now()
    const deadline = AbortSignal.timeout(20_000)
    while (conn.status === 'open' && !deadline.aborted) {
      await new Promise((r) => setTimeout(r, 20))
    }
    const ms = performance.now() - t0
    assert.notEqual(conn.status, 'open', 'the silent connection was aborted')
    // 5 × 400 ms of silence counted (never more than wall-clock time), after a first round.
    assert.ok(ms >= 2_000, `not before 5 timeouts: ${ms.toFixed(0)} ms`)
  })

  it('a redial to a slow peer starts from what the peer was, not from the floor', async () => {
    // `b` echoes every ping after 700 ms (> the 400 ms timeout) and sends nothing else. The
    // first connection learns it; a second connection to the same peer is judged by it.
    const [a, b] = await pair(
      { busyIntervalMs: 100, idleIntervalMs: 100, timeoutMs: 400 },
      { busyIntervalMs: 3_600_000 },
    )
    const echoes = await echoAfter(b, () => 700)
    const first = a.libp2p.getConnections(b.peerId)[0]
    const learnt = AbortSignal.timeout(20_000)
    while (echoes() < 2 && !learnt.aborted) await new Promise((r) => setTimeout(r, 50))
    assert.equal(first.status, 'open')
    await first.close()
    const second = await a.libp2p.dial(b.libp2p.getMultiaddrs()[0])
    const before = echoes()
    const deadline = AbortSignal.timeout(30_000)
    while (echoes() < before + 4 && second.status === 'open' && !deadline.aborted) {
      await new Promise((r) => setTimeout(r, 50))
    }
    assert.equal(second.status, 'open', `cut after ${echoes() - before} echoes`)
  })
})

describe('SlowEchoHistory', () => {
  it('keeps the decaying peak per peer', () => {
    const h = new SlowEchoHistory()
    h.record('p', 800, 0)
    h.record('q', 10, 0)
    assert.equal(h.get('p', 1), 800)
    h.record('p', 100, 2)
    assert.equal(h.get('p', 3), 600, 'a faster echo lowers the peak by a quarter')
    h.record('p', 900, 4)
    assert.equal(h.get('p', 5), 900)
    assert.equal(h.get('q', 5), 10)
    assert.equal(h.get('r', 5), undefined)
  })

  it('is bounded in peers (the least recently heard go first) and in age', () => {
    const h = new SlowEchoHistory(3, 1_000)
    for (const p of ['a', 'b', 'c', 'd']) h.record(p, 5, 0)
    assert.equal(h.size, 3)
    assert.equal(h.get('a', 0), undefined)
    assert.equal(h.get('d', 0), 5)
    assert.equal(h.get('b', 1_001), undefined, 'forgotten after maxAgeMs without an echo')
  })
})

describe('SilenceClock', () => {
  it('counts silence at wall-clock pace while polls are on time', () => {
    const clock = new SilenceClock(250, 0, 100)
    let silent = 0
    for (let t = 250; t <= 2_000; t += 250) silent = clock.observe(t, 100)
    assert.equal(silent, 2_000)
  })

  it('a late poll adds at most 1.5 intervals: a stalled process does not blame its peer', () => {
    const clock = new SilenceClock(250, 0, 100)
    assert.equal(clock.observe(600, 100), 375)
    assert.equal(clock.observe(1_200, 100), 750)
  })

  it('restarts on any received byte, and after a poll more than 3 intervals late', () => {
    const clock = new SilenceClock(250, 0, 100)
    assert.equal(clock.observe(250, 100), 250)
    assert.equal(clock.observe(500, 101), 0)
    assert.equal(clock.observe(750, 101), 250)
    assert.equal(clock.observe(1_600, 101), 0)
  })
})
