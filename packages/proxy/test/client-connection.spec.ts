import assert from 'node:assert/strict'
import { once } from 'node:events'
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { ClientConnection, type ConnectionHandler } from '../src/client-connection.ts'
import type { ClientResponse } from '../src/client-response.ts'
import { CLIENT_READ_AHEAD_BYTES } from '../src/constants.ts'
import type { ProxyErrorCode } from '../src/errors.ts'
import { sendError } from '../src/errors.ts'
import type { GatewayRequest } from '../src/gateway-request.ts'
import { rawExchange, statusCodes } from './raw-http.ts'

/**
 * The gateway's client side on its own: a ClientConnection per socket in front of a
 * handler that answers every request with what it parsed (method, target, headers, the
 * body's length and bytes), after the whole body. Real sockets, raw bytes from the test.
 */
class EchoHandler implements ConnectionHandler {
  readonly errors: ProxyErrorCode[] = []
  /** Requests seen, in order. */
  readonly seen: string[] = []
  /** `/hold` requests wait here. */
  readonly held: ClientResponse[] = []
  closedConnections = 0

  request(req: GatewayRequest, res: ClientResponse): void {
    this.seen.push(`${req.method} ${req.url}`)
    if (req.framing == null) {
      sendError(res, req.framingError!)
      return
    }
    if (req.url === '/early') {
      // Answers before reading the body (as the gateway does for an unknown service).
      res.writeHead(404, undefined, ['Content-Length', '5'])
      res.end('early')
      return
    }
    if (req.url === '/hold') {
      this.held.push(res)
      return
    }
    const chunks: Buffer[] = []
    const answer = (): void => {
      const body = Buffer.concat(chunks)
      const text = JSON.stringify({
        method: req.method,
        url: req.url,
        headers: req.rawHeaders,
        length: body.length,
        body: body.length <= 64 ? body.toString('latin1') : undefined,
      })
      if (req.url.startsWith('/chunked')) res.writeHead(200, undefined, ['X-A', '1'])
      else res.writeHead(200, undefined, ['Content-Length', String(Buffer.byteLength(text))])
      res.write(Buffer.from(text))
      res.end()
    }
    // `/later...`: answered a while after the body, as the gateway does.
    const done = req.url.startsWith('/later') ? () => setTimeout(answer, 20) : answer
    if (req.complete) {
      done()
      return
    }
    req.consume({
      onData: (c) => chunks.push(c),
      onEnd: done,
      onError: () => {},
    })
    req.resume()
  }

  clientError(code: ProxyErrorCode): void {
    this.errors.push(code)
  }

  closed(): void {
    this.closedConnections++
  }
}

let server: Server
let port = 0
let handler: EchoHandler
const connections = new Set<ClientConnection>()

before(async () => {
  handler = new EchoHandler()
  server = createServer({ allowHalfOpen: true }, (socket) => {
    connections.add(new ClientConnection(socket, handler, 16 * 1024))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  port = (server.address() as AddressInfo).port
})

after(async () => {
  for (const res of handler.held) res.destroy()
  for (const c of connections) c.socket.destroy()
  server.close()
  await once(server, 'close')
})

/** The JSON bodies of every answer in a raw exchange, in order. */
function bodies(answer: string): Array<Record<string, unknown>> {
  return [...answer.matchAll(/\r\n\r\n(?:[0-9a-f]+\r\n)?(\{.*?\})(?:\r\n)?/g)].map((m) =>
    JSON.parse(m[1]),
  )
}

/**
 * Writes `piece` on `socket` until the gateway stops taking bytes (no 'drain' within
 * 500 ms; at most `limit` bytes or 10 s), then asserts that its connection stopped reading
 * having read little: what it reads ahead, plus a socket buffer.
 */
async function assertStopsReading(socket: Socket, piece: string | Buffer, limit: number) {
  let written = 0
  const deadline = performance.now() + 10_000
  while (performance.now() < deadline && written < limit) {
    written += piece.length
    if (!socket.write(piece)) {
      const drained = await Promise.race([
        once(socket, 'drain').then(() => true),
        sleep(500).then(() => false),
      ])
      if (!drained) break
    }
  }
  assert.ok(written < limit, 'the gateway kept reading')
  const conn = [...connections].find((c) => c.socket.remotePort === socket.localPort)
  assert.ok(conn != null)
  assert.ok(conn.socket.isPaused(), 'the connection is not reading')
  assert.ok(
    conn.socket.bytesRead < 4 * CLIENT_READ_AHEAD_BYTES,
    `${conn.socket.bytesRead} bytes read of ${written}`,
  )
}

describe('client connection: pipelined and split requests', () => {
  it('answers pipelined requests in order, whatever their framing, on one connection', async () => {
    const answer = await rawExchange(port, [
      'GET /a HTTP/1.1\r\nHost: x\r\n\r\n' +
        'POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello' +
        'POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n' +
        'POST /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n' +
        'GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    ])
    assert.deepEqual(statusCodes(answer), [200, 200, 200, 200, 200], answer)
    const got = bodies(answer)
    assert.deepEqual(
      got.map((b) => [b.method, b.url, b.body]),
      [
        ['GET', '/a', ''],
        ['POST', '/b', 'hello'],
        ['POST', '/c', 'abcde'],
        ['POST', '/d', 'z'],
        ['GET', '/chunked', ''],
      ],
    )
    // The last answer has no length: chunked for an HTTP/1.1 client, and the connection ends.
    assert.match(answer, /Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n[0-9a-f]+\r\n\{/)
    assert.match(answer, /\r\n0\r\n\r\n$/)
  })

  it('reads a head and body sent one byte at a time', async () => {
    const text =
      'POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nxyz'
    const answer = await rawExchange(port, [...text], { pauseMs: 1 })
    assert.deepEqual(
      bodies(answer).map((b) => [b.url, b.body]),
      [['/slow', 'xyz']],
    )
  })

  it('a head of more than 32 headers comes whole (llhttp hands them over in parts)', async () => {
    let head = 'GET /many HTTP/1.1\r\nHost: x\r\nConnection: close\r\n'
    for (let i = 0; i < 100; i++) head += `X-H${i}: v${i}\r\n`
    const answer = await rawExchange(port, [`${head}\r\n`])
    const [echo] = bodies(answer)
    const headers = echo.headers as string[]
    assert.equal(headers.length, 2 * 102)
    assert.deepEqual(headers.slice(-2), ['X-H99', 'v99'])
  })

  it('a body the answer did not wait for is read through; the next request is served', async () => {
    const body = 'q'.repeat(200_000)
    const answer = await rawExchange(
      port,
      [
        `POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n`,
        body.slice(0, 1000),
        `${body.slice(1000)}GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
      ],
      { pauseMs: 20 },
    )
    assert.deepEqual(statusCodes(answer), [404, 200], answer)
    assert.deepEqual(
      bodies(answer).map((b) => b.url),
      ['/after'],
    )
  })

  it('Expect: 100-continue gets its 100 before the body is sent', async () => {
    const socket = connect(port, '127.0.0.1')
    await once(socket, 'connect')
    socket.write('PUT /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n')
    const [first] = (await once(socket, 'data')) as [Buffer]
    assert.equal(first.toString(), 'HTTP/1.1 100 Continue\r\n\r\n')
    socket.end('ok')
    socket.destroy()
  })

  it('HTTP/1.0: an answer without a length ends the connection; one with a length keeps it alive when asked', async () => {
    const closeDelimited = await rawExchange(port, ['GET /chunked HTTP/1.0\r\n\r\n'])
    assert.match(closeDelimited, /^HTTP\/1\.1 200 /)
    assert.doesNotMatch(closeDelimited, /Transfer-Encoding/i)
    assert.match(closeDelimited, /Connection: close\r\n\r\n\{/)
    const kept = await rawExchange(port, ['GET /k1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n'], {
      timeoutMs: 500,
    })
    assert.match(kept, /Connection: keep-alive/)
    assert.deepEqual(
      bodies(kept).map((b) => b.url),
      ['/k1'],
    )
  })
})

describe('client connection: malformed, cut and abusive input', () => {
  const cases: Array<[string, string, ProxyErrorCode]> = [
    ['garbage', 'HELLO\r\n\r\n', 'ERR_BAD_REQUEST'],
    ['a bare LF', 'GET / HTTP/1.1\nHost: x\n\n', 'ERR_BAD_REQUEST'],
    ['obs-fold', 'GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n', 'ERR_BAD_REQUEST'],
    ['a space before the colon', 'GET / HTTP/1.1\r\nHost : x\r\n\r\n', 'ERR_BAD_REQUEST'],
    [
      'two Content-Lengths',
      'POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab',
      'ERR_BAD_REQUEST',
    ],
    [
      'Content-Length with Transfer-Encoding',
      'POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n',
      'ERR_BAD_REQUEST',
    ],
    ['a NUL in a header', 'GET / HTTP/1.1\r\nX: a\0b\r\n\r\n', 'ERR_BAD_REQUEST'],
    ['a head cut short by the client', 'GET / HTTP/1.1\r\nHost: x\r\n', 'ERR_BAD_REQUEST'],
    [
      'a head over the limit',
      `GET / HTTP/1.1\r\nX: ${'a'.repeat(20_000)}\r\n\r\n`,
      'ERR_HEADERS_TOO_LARGE',
    ],
    ['a method that is not a token', 'G@T / HTTP/1.1\r\n\r\n', 'ERR_BAD_REQUEST'],
    ['a header name with a space', 'GET / HTTP/1.1\r\nX Y: 1\r\n\r\n', 'ERR_BAD_REQUEST'],
    ['a NUL in the target', 'GET /a\0b HTTP/1.1\r\n\r\n', 'ERR_BAD_REQUEST'],
    ['the HTTP/2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'ERR_BAD_REQUEST'],
    ['a negative length', 'POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n', 'ERR_BAD_REQUEST'],
  ]
  for (const [what, bytes, code] of cases) {
    it(`${what}: one error answer, then the end of the connection`, async () => {
      const before = handler.errors.length
      const socket = connect(port, '127.0.0.1')
      const chunks: Buffer[] = []
      socket.on('data', (c: Buffer) => chunks.push(c))
      await once(socket, 'connect')
      socket.end(bytes) // the cut head needs the client's end to be seen
      await once(socket, 'close')
      const answer = Buffer.concat(chunks).toString('latin1')
      assert.equal(statusCodes(answer).length, 1, answer)
      assert.match(answer, new RegExp(`x-mtc-error: ${code}`))
      assert.deepEqual(handler.errors.slice(before), [code])
    })
  }

  for (const [what, body] of [
    ['a chunk size that is not hex', 'zz\r\nab\r\n0\r\n\r\n'],
    ['a chunk size past 2^64', 'fffffffffffffffffff\r\nab\r\n0\r\n\r\n'],
    ['a chunk longer than its size', '1\r\nab\r\n0\r\n\r\n'],
  ]) {
    it(`${what} cuts its request: no answer, the connection closes`, async () => {
      const answer = await rawExchange(port, [
        `POST /bad-chunk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${body}`,
      ])
      assert.equal(answer, '')
    })
  }

  it('a body nobody takes: the connection stops reading it; memory stays bounded', async () => {
    const socket = connect(port, '127.0.0.1')
    await once(socket, 'connect')
    socket.write('POST /hold HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n')
    await assertStopsReading(socket, Buffer.alloc(1024 * 1024, 0x61), 100_000_000)
    socket.destroy()
  })

  it('many one-byte chunks make one whole body', async () => {
    const chunks = '1\r\nx\r\n'.repeat(5000)
    const answer = await rawExchange(port, [
      `POST /tiny HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${chunks}0\r\n\r\n`,
    ])
    assert.deepEqual(
      bodies(answer).map((b) => b.length),
      [5000],
    )
  })

  it('garbage pipelined behind a request being answered: that answer is the last', async () => {
    const answer = await rawExchange(port, [
      'POST /later HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\nNOT HTTP\r\n\r\n',
    ])
    assert.deepEqual(statusCodes(answer), [200], answer)
    assert.match(answer, /Connection: close/)
  })

  it('garbage after an answered request is a bad request of its own', async () => {
    const answer = await rawExchange(port, [
      'POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\nNOT HTTP\r\n\r\n',
    ])
    assert.deepEqual(statusCodes(answer), [200, 400], answer)
  })

  it('a client that pipelines without reading: the connection stops reading; memory stays bounded', async () => {
    const socket = connect(port, '127.0.0.1')
    await once(socket, 'connect')
    // The first request is held (never answered): everything behind it waits.
    socket.write('GET /hold HTTP/1.1\r\nHost: x\r\n\r\n')
    await assertStopsReading(socket, 'GET /p HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(1000), 64e6)
    // Nothing behind the held request was dispatched.
    assert.equal(handler.seen.filter((s) => s === 'GET /p').length, 0)
    socket.destroy()
  })
})
