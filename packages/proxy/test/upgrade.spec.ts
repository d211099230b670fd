import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createServer, get, type IncomingMessage, type Server } from 'node:http'
import { connect } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { freePort, waitFor } from '@mtc/testkit'
import { EventSource } from 'eventsource'
import WebSocket, { WebSocketServer } from 'ws'
import { Mesh, type ProxyProc } from './fixture.ts'

/**
 * Traffic that is not one request and one response: WebSocket (a real `ws` client and
 * server) and server-sent events, end to end through client proxy → mesh → service proxy
 * → service. A 101 turns the mesh stream into a two-way byte pipe for good; CONNECT stays
 * refused (errors.spec.ts).
 */
const SERVICE = 'hello-upgrade'
const mesh = new Mesh()
let client: ProxyProc
let instance: ProxyProc
let server: Server
let wss: WebSocketServer
/** The service's WebSocket connections open now, and how each one ended. */
const open = new Set<WebSocket>()
const closes: Array<{ code: number; reason: string }> = []
/** SSE: resolves event i's delivery (set by the test's client), so the service sends the
 * next one only once the previous one arrived. */
let delivered: Array<PromiseWithResolvers<void>> = []
const SSE_EVENTS = 10
const SSE_INTERVAL_MS = 100

before(async () => {
  await mesh.start()
  server = createServer((req, res) => {
    if (req.url === '/events') {
      void serveEvents(res)
      return
    }
    if (req.url === '/resumable') {
      serveResumable(req, res)
      return
    }
    res.end('up\n')
  })
  wss = new WebSocketServer({ server, path: '/ws', maxPayload: 64 * 1024 * 1024 })
  wss.on('connection', (ws) => {
    open.add(ws)
    ws.on('message', (data, isBinary) => {
      if (!isBinary && data.toString() === 'close-please') {
        ws.close(4000, 'asked to')
        return
      }
      ws.send(data, { binary: isBinary })
    })
    ws.on('close', (code, reason) => {
      open.delete(ws)
      closes.push({ code, reason: reason.toString() })
    })
  })
  const port = await freePort()
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  instance = await mesh.serviceProxy(SERVICE, port)
  client = await mesh.proxy([String(await freePort())])
  await mesh.routable(client.port, SERVICE)
})

after(async () => {
  for (const ws of open) ws.terminate()
  wss?.close()
  server?.closeAllConnections()
  server?.close()
  await mesh.stop()
})

/** Sends SSE_EVENTS events, each SSE_INTERVAL_MS after the previous one was delivered. */
async function serveEvents(res: import('node:http').ServerResponse): Promise<void> {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' })
  res.flushHeaders()
  for (let i = 0; i < SSE_EVENTS; i++) {
    await new Promise((r) => setTimeout(r, SSE_INTERVAL_MS))
    if (res.destroyed) return
    res.write(`id: ${i}\ndata: event ${i}\n\n`)
    // A proxy that held this event (for more bytes, or the end) would stall here.
    const wait = AbortSignal.timeout(10_000)
    const arrived = await Promise.race([
      delivered[i].promise.then(() => true),
      new Promise<boolean>((r) => wait.addEventListener('abort', () => r(false), { once: true })),
    ])
    if (!arrived) {
      res.destroy() // the client sees a cut response: the test fails
      return
    }
  }
  res.end()
}

/** Last-Event-ID of each request to /resumable, in order ('' for none). */
const resumedFrom: string[] = []

/**
 * An event stream that ends after three events and, asked again with Last-Event-ID,
 * sends one more naming it: what an EventSource client does across a reconnection.
 */
function serveResumable(req: IncomingMessage, res: import('node:http').ServerResponse): void {
  const last = req.headers['last-event-id']
  resumedFrom.push(typeof last === 'string' ? last : '')
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' })
  if (last == null)
    res.end('retry: 50\n\nid: 1\ndata: one\n\nid: 2\ndata: two\n\nid: 3\ndata: three\n\n')
  else res.write(`data: resumed after ${last}\n\n`) // held open until the client closes
}

/** A WebSocket through the client proxy, once open. */
async function connectWs(path = '/ws'): Promise<WebSocket> {
  const ws = new WebSocket(`ws://127.0.0.1:${client.port}/${SERVICE}${path}`, {
    maxPayload: 64 * 1024 * 1024,
  })
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
    ws.once('unexpected-response', (_req, res: IncomingMessage) =>
      reject(new Error(`HTTP ${res.statusCode}`)),
    )
  })
  return ws
}

/** The next message on `ws`. */
function nextMessage(ws: WebSocket): Promise<{ data: Buffer; isBinary: boolean }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no message within 30 s')), 30_000)
    ws.once('message', (data, isBinary) => {
      clearTimeout(timer)
      resolve({ data: data as Buffer, isBinary })
    })
  })
}

function closed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) =>
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  )
}

describe('proxy: WebSocket through the mesh (ws client and server)', () => {
  it('echoes text and binary messages, many in a row on one connection', async () => {
    const ws = await connectWs()
    for (let i = 0; i < 20; i++) {
      ws.send(`hello ${i}`)
      const text = await nextMessage(ws)
      assert.equal(text.isBinary, false)
      assert.equal(text.data.toString(), `hello ${i}`)
    }
    const bytes = randomBytes(1000)
    ws.send(bytes)
    const bin = await nextMessage(ws)
    assert.equal(bin.isBinary, true)
    assert.deepEqual(bin.data, bytes)
    ws.close()
    await closed(ws)
  })

  it('carries large messages both ways (8 MiB up, echoed 8 MiB down), byte-exact', async () => {
    const ws = await connectWs()
    const big = randomBytes(8 * 1024 * 1024)
    const echo = nextMessage(ws)
    ws.send(big)
    const got = await echo
    assert.equal(got.data.length, big.length)
    assert.ok(got.data.equals(big), 'the echo differs')
    ws.close()
    await closed(ws)
  })

  it('closes cleanly from the client: the service sees its code and reason', async () => {
    const before = closes.length
    const ws = await connectWs()
    const done = closed(ws)
    ws.close(1000, 'bye')
    assert.deepEqual(await done, { code: 1000, reason: 'bye' })
    // The earlier tests' connections may close at the service meanwhile (code 1005): look
    // for this one's close among those seen since.
    await waitFor(
      'the service saw the close with its code and reason',
      () => closes.slice(before).some((c) => c.code === 1000 && c.reason === 'bye'),
      { timeoutMs: 10_000 },
    )
  })

  it('closes cleanly from the service: the client sees its code and reason', async () => {
    const ws = await connectWs()
    const done = closed(ws)
    ws.send('close-please')
    assert.deepEqual(await done, { code: 4000, reason: 'asked to' })
  })

  it('a client that vanishes (no close frame) has its stream and service connection closed', async () => {
    // No stream open at the instance (idle ones close after a few seconds)...
    const streamsOpen = () => instance.metric('mtc_proxy_inbound_streams_open')
    await waitFor('no stream open at the instance', async () => (await streamsOpen()) === 0, {
      timeoutMs: 20_000,
      intervalMs: 250,
    })
    const ws = await connectWs()
    // ...but the WebSocket's.
    assert.equal(await streamsOpen(), 1)
    await waitFor('the service holds the connection', () => open.size > 0, { timeoutMs: 5_000 })
    const before = closes.length
    const held = open.size
    // No close frame, no FIN first: the TCP connection just goes.
    ws.terminate()
    await waitFor(
      'the service connection closed',
      () => closes.length > before && open.size < held,
      { timeoutMs: 15_000, intervalMs: 50 },
    )
    // 1006: the service's socket closed without a close frame (the relay closed it).
    assert.equal(closes.at(-1)?.code, 1006)
    // The mesh stream is gone too (not held for a client that is not there).
    await waitFor('the stream closed', async () => (await streamsOpen()) === 0, {
      timeoutMs: 15_000,
      intervalMs: 100,
    })
    // The gateway still serves.
    const again = await connectWs()
    again.send('still here')
    assert.equal((await nextMessage(again)).data.toString(), 'still here')
    again.close()
    await closed(again)
  })

  it('an upgrade the service refuses gets its answer, then the connection ends', async () => {
    // ws answers an upgrade on another path with 400 and closes.
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(client.port, '127.0.0.1', () =>
        socket.write(
          `GET /${SERVICE}/elsewhere HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n` +
            'Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n' +
            'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
        ),
      )
      const chunks: Buffer[] = []
      socket.on('data', (c: Buffer) => chunks.push(c))
      socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')))
      socket.on('error', reject)
      socket.setTimeout(15_000, () => socket.destroy(new Error('the connection stayed open')))
    })
    assert.match(answer, /^HTTP\/1\.1 400 /)
  })
})

describe('proxy: server-sent events through the mesh', () => {
  it('delivers each event before the service sends the next one', async () => {
    delivered = Array.from({ length: SSE_EVENTS }, () => Promise.withResolvers<void>())
    const seen: string[] = []
    const started = performance.now()
    await new Promise<void>((resolve, reject) => {
      const req = get(
        { host: '127.0.0.1', port: client.port, path: `/${SERVICE}/events`, agent: false },
        (res) => {
          assert.equal(res.statusCode, 200)
          assert.equal(res.headers['content-type'], 'text/event-stream')
          let text = ''
          res.setEncoding('utf8')
          res.on('data', (chunk: string) => {
            text += chunk
            for (let end = text.indexOf('\n\n'); end >= 0; end = text.indexOf('\n\n')) {
              const event = text.slice(0, end)
              text = text.slice(end + 2)
              const id = Number(/^id: (\d+)$/m.exec(event)?.[1])
              seen.push(event)
              delivered[id]?.resolve()
            }
          })
          res.on('end', () => resolve())
          res.on('error', reject)
        },
      )
      req.on('error', reject)
      req.setTimeout(60_000, () => req.destroy(new Error('no end within 60 s')))
    })
    const elapsed = performance.now() - started
    assert.deepEqual(
      seen,
      Array.from({ length: SSE_EVENTS }, (_, i) => `id: ${i}\ndata: event ${i}`),
    )
    // Each event waited for the previous one's delivery (a proxy holding one would have
    // made the service give up after 10 s and cut the response).
    assert.ok(elapsed >= SSE_EVENTS * SSE_INTERVAL_MS, `took ${elapsed.toFixed(0)} ms`)
  })
})

describe('proxy: an EventSource client through the mesh (the eventsource package)', () => {
  it('gets every event with its id, reconnects after the end and resumes with Last-Event-ID', async () => {
    const es = new EventSource(`http://127.0.0.1:${client.port}/${SERVICE}/resumable`)
    const got: Array<{ data: string; id: string }> = []
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`only ${JSON.stringify(got)} in 30 s`)),
          30_000,
        )
        es.onmessage = (e) => {
          got.push({ data: e.data, id: e.lastEventId })
          if (e.data.startsWith('resumed')) {
            clearTimeout(timer)
            resolve()
          }
        }
      })
    } finally {
      es.close()
    }
    assert.deepEqual(got, [
      { data: 'one', id: '1' },
      { data: 'two', id: '2' },
      { data: 'three', id: '3' },
      { data: 'resumed after 3', id: '3' },
    ])
    assert.deepEqual(resumedFrom, ['', '3'])
  })
})
