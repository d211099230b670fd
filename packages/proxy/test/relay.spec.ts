import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { readFile } from 'node:fs/promises'
import { createServer as createHttpServer } from 'node:http'
import { createServer, type Server, type Socket } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { MeshNode, readSwarmKeyFile } from '@mtc/p2pnode'
import { freePort, waitFor } from '@mtc/testkit'
import { multiaddr } from '@multiformats/multiaddr'
import { HTTP_PROTOCOL } from '../src/constants.ts'
import { StreamDuplex } from '../src/stream-duplex.ts'
import { PREFACE_OK } from '../src/stream-preface.ts'
import { http, Mesh, type ProxyProc } from './fixture.ts'

/**
 * The instance side as a byte relay (`/mtc/http/2.0.0`): each mesh stream is spliced to
 * its own TCP connection to the service after a one-line preface. Raw streams from a peer
 * with the key on one side, raw TCP services on the other: what arrives, in which order,
 * how each side's end, cut or stall reaches the other.
 */
const MB = 1024 * 1024
const mesh = new Mesh()
/** Each test service: the connections it accepted, in order. */
const accepted = new Map<string, Socket[]>()
const servers: Server[] = []
let peer: MeshNode

/**
 * A raw TCP service: `onConnection` gets each connection once its first bytes are there,
 * unread (the instance's readiness checks connect and leave without a byte); allowHalfOpen:
 * a FIN from the mesh does not close the service's side.
 */
async function tcpService(name: string, onConnection: (s: Socket) => void): Promise<number> {
  const conns: Socket[] = []
  accepted.set(name, conns)
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => {
    s.on('error', () => {})
    s.once('readable', () => {
      if (s.readableLength === 0) return // its end: a readiness check
      conns.push(s)
      onConnection(s)
    })
  })
  const port = await freePort()
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  servers.push(server)
  return port
}

/** A service proxy for `name` in front of 127.0.0.1:`port`, and its first address. */
async function instance(name: string, port: number): Promise<{ proxy: ProxyProc; addr: string }> {
  const proxy = await mesh.serviceProxy(name, port)
  const [addr] = (await readFile(proxy.addrFile, 'utf8')).trim().split('\n')
  return { proxy, addr }
}

/** A raw stream to an instance, as a gateway opens one. */
async function openStream(addr: string): Promise<StreamDuplex> {
  const stream = await peer.libp2p.dialProtocol(multiaddr(addr), HTTP_PROTOCOL)
  const duplex = new StreamDuplex(stream, { allowHalfOpen: true })
  duplex.on('error', () => {})
  return duplex
}

/** Everything `duplex` delivers until its end (or its close), as latin1 text, and how it
 * ended: `end` (the remote's clean end) or `error`. */
async function readAll(
  duplex: StreamDuplex,
  timeoutMs = 10_000,
): Promise<{ text: string; how: 'end' | 'error' | 'timeout'; error?: Error }> {
  const chunks: Buffer[] = []
  duplex.on('data', (c: Buffer) => chunks.push(c))
  let error: Error | undefined
  const how = await new Promise<'end' | 'error' | 'timeout'>((resolve) => {
    const timer = setTimeout(() => resolve('timeout'), timeoutMs)
    duplex.once('end', () => {
      clearTimeout(timer)
      resolve('end')
    })
    duplex.once('error', (err) => {
      error = err
      clearTimeout(timer)
      resolve('error')
    })
  })
  return { text: Buffer.concat(chunks).toString('latin1'), how, error }
}

/** Resolves once `duplex` closed (at once if it did already). */
function closed(duplex: StreamDuplex): Promise<unknown> {
  return duplex.closed ? Promise.resolve() : once(duplex, 'close')
}

/** `promise`, or a rejection naming `what` after `ms` (no test waits forever). */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** Resolves once the instance closed `socket` (its FIN read, the socket being read), or
 * rejects after `ms`. */
async function closedWithin(socket: Socket, ms: number, what: string): Promise<void> {
  if (socket.readableEnded || socket.destroyed) return
  await within(
    new Promise((resolve) => {
      socket.once('end', resolve)
      socket.once('close', resolve)
    }),
    ms,
    `${what} to close`,
  )
}

before(async () => {
  await mesh.start()
  peer = await MeshNode.startClient({ role: 'test', psk: await readSwarmKeyFile(mesh.pskFile) })
})

after(async () => {
  await peer?.stop()
  await mesh.stop()
  for (const s of servers) {
    s.close()
    for (const c of accepted.values()) for (const s of c) s.destroy()
  }
})

describe('proxy: the instance side relays bytes', () => {
  it('a refused service: one refusal line, then the end; nothing else', async () => {
    const port = await freePort() // nothing listens there
    const { proxy, addr } = await instance('relay-refused', port)
    const duplex = await openStream(addr)
    duplex.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n')
    const { text, how, error } = await readAll(duplex)
    assert.equal(how, 'end', error?.message)
    assert.match(text, /^-ERR_SERVICE_UNREACHABLE [^\n]*ECONNREFUSED[^\n]*\n$/)
    assert.ok(text.length <= 256)
    assert.equal(await proxy.metric('mtc_proxy_inbound_refusals_total'), 1)
    assert.equal(await proxy.metric('mtc_proxy_service_ready'), 0)
    duplex.destroy()
  })

  it('+OK first, then the service bytes exactly; one request per run of bytes', async () => {
    const port = await tcpService('relay-echo', (s) => s.pipe(s))
    const { proxy, addr } = await instance('relay-echo', port)
    const duplex = await openStream(addr)
    const chunks: Buffer[] = []
    duplex.on('data', (c: Buffer) => chunks.push(c))
    const got = async (text: string): Promise<void> => {
      await waitFor(`echo of ${text}`, () => Buffer.concat(chunks).toString().endsWith(text))
    }
    duplex.write('ping-1')
    await got(`${PREFACE_OK}ping-1`)
    duplex.write('ping-2')
    await got('ping-1ping-2')
    assert.equal(Buffer.concat(chunks).toString(), `${PREFACE_OK}ping-1ping-2`)
    assert.equal(await proxy.metric('mtc_proxy_inbound_requests_total'), 2)
    assert.equal(await proxy.metric('mtc_proxy_inbound_bytes_total', { direction: 'in' }), 12)
    assert.equal(await proxy.metric('mtc_proxy_inbound_bytes_total', { direction: 'out' }), 12)
    assert.equal(await proxy.metric('mtc_proxy_inbound_streams_open'), 1)
    duplex.end()
    await within(closed(duplex), 10_000, 'the stream closing')
    assert.equal(accepted.get('relay-echo')?.length, 1, 'one connection for the stream')
    await waitFor(
      'stream closed',
      async () => (await proxy.metric('mtc_proxy_inbound_streams_open')) === 0,
    )
  })

  it('a service that closes (even resets) mid-response: what it sent, then a clean end', async () => {
    const port = await tcpService('relay-cut', (s) => {
      s.once('data', () => {
        s.write('HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial')
        setTimeout(() => s.resetAndDestroy(), 100)
      })
    })
    const { addr } = await instance('relay-cut', port)
    const duplex = await openStream(addr)
    duplex.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n')
    const { text, how } = await readAll(duplex)
    // A clean end, not a reset: the caller tells a service that hung up from a lost instance.
    assert.equal(how, 'end')
    assert.equal(text, `${PREFACE_OK}HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial`)
    duplex.end()
  })

  it('half-close both ways: each FIN reaches the other side, the other direction goes on', async () => {
    let serviceGotEnd = false
    const received: Buffer[] = []
    const port = await tcpService('relay-half', (s) => {
      s.on('data', (c: Buffer) => received.push(c))
      s.on('end', () => {
        serviceGotEnd = true
      })
      // The service answers and closes its writing at once, then keeps reading.
      s.end('bye')
    })
    const { addr } = await instance('relay-half', port)
    const duplex = await openStream(addr)
    const reading = readAll(duplex)
    duplex.write('hi;')
    const { text, how } = await reading
    assert.equal(how, 'end', 'the service FIN ends the stream for reading')
    assert.equal(text, `${PREFACE_OK}bye`)
    // The caller can still send: the service reads it, then the caller's FIN.
    duplex.write('after-fin')
    duplex.end()
    await waitFor('service read the rest and the FIN', () => serviceGotEnd)
    assert.equal(Buffer.concat(received).toString(), 'hi;after-fin')
    await within(closed(duplex), 10_000, 'the stream closing')
    const [conn] = accepted.get('relay-half') ?? []
    await closedWithin(conn, 5_000, 'the service connection')
  })

  it('the caller half-closes: the service sees the FIN and still answers', async () => {
    const port = await tcpService('relay-caller-fin', (s) => {
      const got: Buffer[] = []
      s.on('data', (c: Buffer) => got.push(c))
      s.on('end', () => s.end(`got ${Buffer.concat(got).toString()}`))
    })
    const { addr } = await instance('relay-caller-fin', port)
    const duplex = await openStream(addr)
    duplex.end('question')
    const { text, how } = await readAll(duplex)
    assert.equal(how, 'end')
    assert.equal(text, `${PREFACE_OK}got question`)
  })

  it('a service that does not read: the caller is held back, memory stays bounded, then all arrives', async () => {
    let conn: Socket | undefined
    const port = await tcpService('relay-slow', (s) => {
      conn = s // and never read, until resumed below
    })
    const { proxy, addr } = await instance('relay-slow', port)
    const rss = async (): Promise<number> => {
      const status = await readFile(`/proc/${proxy.proc.child.pid}/status`, 'utf8')
      return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1]) / 1024
    }
    const duplex = await openStream(addr)
    duplex.write('start')
    await waitFor('service connection', () => conn != null)
    const rssBefore = await rss()
    const TOTAL = 64 * MB
    const chunk = Buffer.alloc(64 * 1024, 7)
    const sent = createHash('sha256').update('start')
    let written = 0
    // Write while the duplex accepts; stop when it pushes back for 1 s.
    const stalled = (async () => {
      while (written < TOTAL) {
        sent.update(chunk)
        written += chunk.length
        if (!duplex.write(chunk)) {
          const drained = await Promise.race([
            once(duplex, 'drain').then(() => true),
            sleep(1_000).then(() => false),
          ])
          if (!drained) return written
        }
      }
      return written
    })()
    const at = await stalled
    assert.ok(at < TOTAL, `the caller was held back (wrote ${at / MB} MB of ${TOTAL / MB})`)
    // What the proxy holds: its stream windows and socket buffers, not the 64 MB.
    assert.ok(at < 24 * MB, `buffered along the way: ${at / MB} MB`)
    const growth = (await rss()) - rssBefore
    assert.ok(growth < 60, `service proxy grew ${growth.toFixed(1)} MB`)
    // The service reads again: every byte arrives, in order.
    const got = createHash('sha256')
    let received = 0
    const c = conn as Socket
    c.on('data', (d: Buffer) => {
      got.update(d)
      received += d.length
    })
    c.resume()
    while (written < TOTAL) {
      sent.update(chunk)
      written += chunk.length
      if (!duplex.write(chunk)) await within(once(duplex, 'drain'), 30_000, 'drain')
    }
    duplex.end()
    await within(once(c, 'end'), 60_000, 'the service reading everything')
    assert.equal(received, TOTAL + 'start'.length)
    assert.equal(got.digest('hex'), sent.digest('hex'))
    duplex.destroy()
  })

  it('a stream abandoned by its caller (reset) closes the service connection', async () => {
    const port = await tcpService('relay-abandon', (s) => s.resume())
    const { proxy, addr } = await instance('relay-abandon', port)
    const duplex = await openStream(addr)
    duplex.write('POST /x HTTP/1.1\r\nContent-Length: 1000\r\n\r\npart')
    await waitFor('service connection', () => (accepted.get('relay-abandon')?.length ?? 0) === 1)
    duplex.destroy() // a reset
    const [conn] = accepted.get('relay-abandon') ?? []
    await closedWithin(conn, 5_000, 'the service connection after a reset')
    await waitFor(
      'stream forgotten',
      async () => (await proxy.metric('mtc_proxy_inbound_streams_open')) === 0,
    )
    assert.equal(proxy.proc.child.exitCode, null)
  })

  it('a caller whose whole connection is lost: its service connections close', async () => {
    const port = await tcpService('relay-lost', (s) => s.resume())
    const { addr } = await instance('relay-lost', port)
    const other = await MeshNode.startClient({
      role: 'test',
      psk: await readSwarmKeyFile(mesh.pskFile),
    })
    try {
      for (let i = 0; i < 3; i++) {
        const s = await other.libp2p.dialProtocol(multiaddr(addr), HTTP_PROTOCOL)
        s.send(new TextEncoder().encode('GET / HTTP/1.1\r\n'))
      }
      await waitFor('3 service connections', () => accepted.get('relay-lost')?.length === 3)
    } finally {
      await other.stop()
    }
    for (const conn of accepted.get('relay-lost') ?? [])
      await closedWithin(conn, 10_000, 'a service connection after its peer left')
  })

  it('idleSeconds counts bytes, not open streams', async () => {
    const port = await tcpService('relay-idle', (s) => s.pipe(s))
    const { proxy, addr } = await instance('relay-idle', port)
    const status = async (): Promise<{ idleSeconds: number }> =>
      JSON.parse((await http(proxy.metricsPort, '/status')).body.toString())
    const duplex = await openStream(addr)
    duplex.write('x')
    await within(once(duplex, 'data'), 10_000, 'an echo')
    assert.ok((await status()).idleSeconds < 2)
    // The warm stream stays open with nothing on it: the instance goes idle all the same.
    await waitFor('idle while a stream is open', async () => (await status()).idleSeconds >= 3, {
      timeoutMs: 15_000,
    })
    assert.equal(await proxy.metric('mtc_proxy_inbound_streams_open'), 1)
    duplex.write('y')
    await within(once(duplex, 'data'), 10_000, 'an echo')
    // Read a moment later on a busy machine: back near 0, below the 3 s seen before.
    assert.ok((await status()).idleSeconds < 3)
    duplex.destroy()
  })

  it('through a gateway: one service connection per stream, reused across keep-alive requests', async () => {
    // Connections that carried a request (readiness checks carry none).
    const used = new Set<Socket>()
    const server = createHttpServer((req, res) => {
      used.add(req.socket)
      res.end('ok')
    })
    const port = await freePort()
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
    const name = 'relay-keepalive'
    try {
      const { proxy } = await instance(name, port)
      const client = await mesh.proxy([String(await freePort())])
      await mesh.routable(client.port, name)
      const requestsBefore = await proxy.metric('mtc_proxy_inbound_requests_total')
      const base = used.size
      const streamsBefore = await client.metric('mtc_proxy_streams_opened_total', { service: name })
      for (let i = 0; i < 20; i++) assert.equal((await http(client.port, `/${name}/`)).status, 200)
      const streams =
        (await client.metric('mtc_proxy_streams_opened_total', { service: name })) - streamsBefore
      assert.equal(used.size - base, streams, 'one service connection per new stream')
      assert.ok(streams <= 2, `20 sequential requests took ${streams} streams`)
      assert.equal((await proxy.metric('mtc_proxy_inbound_requests_total')) - requestsBefore, 20)
    } finally {
      server.closeAllConnections()
      server.close()
    }
  })

  it('through a gateway: bursts of 100 concurrent requests: the later bursts open no new streams', async () => {
    // The service answers a round's requests only once all of them are in, so the gateway
    // holds 100 streams at once and gets them back together.
    const burst = 100
    const held: (() => void)[] = []
    const server = createHttpServer((req, res) => {
      if (req.url !== '/burst') return res.end('ok') // the routability check's requests
      held.push(() => res.end('ok'))
      if (held.length === burst) for (const answer of held.splice(0)) answer()
    })
    const port = await freePort()
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
    const name = 'relay-burst'
    try {
      await instance(name, port)
      const client = await mesh.proxy([String(await freePort())])
      await mesh.routable(client.port, name)
      const before = await client.metric('mtc_proxy_streams_opened_total', { service: name })
      for (let round = 0; round < 3; round++) {
        const answers = await Promise.all(
          Array.from({ length: burst }, () => http(client.port, `/${name}/burst`)),
        )
        assert.deepEqual(new Set(answers.map((a) => a.status)), new Set([200]), `round ${round}`)
      }
      const opened =
        (await client.metric('mtc_proxy_streams_opened_total', { service: name })) - before
      // One per concurrent request in the first round; the later rounds reuse them (a
      // few more if a stream was found closed).
      assert.ok(opened <= burst + 10, `3 bursts of ${burst} opened ${opened} streams`)
    } finally {
      server.closeAllConnections()
      server.close()
    }
  })

  it('stopping: a quiet stream closes at once, one waiting for its answer still gets it', async () => {
    let waiting: Socket | undefined
    const port = await tcpService('relay-stop', (s) => {
      s.on('data', (d: Buffer) => {
        if (d.toString().startsWith('wait')) waiting = s
        else s.write('ok')
      })
    })
    const { proxy, addr } = await instance('relay-stop', port)
    const quiet = await openStream(addr)
    let answered = false
    quiet.once('data', () => {
      answered = true
    })
    const quietRead = readAll(quiet, 20_000)
    quiet.write('hello')
    await waitFor('the quiet stream answered', () => answered)
    const busy = await openStream(addr)
    const busyRead = readAll(busy, 20_000)
    busy.write('wait')
    await waitFor('the request held by the service', () => waiting != null)
    const stopping = proxy.proc.stop()
    const q = await quietRead
    assert.equal(q.how, 'end', q.error?.message)
    assert.equal(q.text, `${PREFACE_OK}ok`)
    assert.equal(busy.readableEnded, false, 'the stream waiting for its answer is kept')
    ;(waiting as Socket).end('answer')
    const b = await busyRead
    assert.equal(b.how, 'end', b.error?.message)
    assert.equal(b.text, `${PREFACE_OK}answer`)
    assert.equal(await stopping, 0, 'stopped within its grace')
  })
})
