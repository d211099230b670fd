import assert from 'node:assert/strict'
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { describe, it } from 'node:test'
import { sequentialLatency } from '../src/sequential.ts'

/** A server answering each request with `answer`; counts requests and connections. */
async function server(answer: (res: ServerResponse, n: number) => void) {
  let n = 0
  let connections = 0
  const srv = createServer((_req, res) => answer(res, ++n))
  srv.on('connection', () => connections++)
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}/bytes/1024`
  return {
    url,
    connections: () => connections,
    close: () => {
      srv.closeAllConnections()
      srv.close()
    },
  }
}

const body = Buffer.alloc(1024, 'x')

describe('sequentialLatency', () => {
  it('times each request to the last byte of its answer, one at a time on one connection', async (t) => {
    // The head now, the body 5 ms later: a request is timed to the end of its body.
    const s = await server((res) => {
      res.writeHead(200, { 'content-length': body.length }).flushHeaders()
      setTimeout(() => res.end(body), 5)
    })
    t.after(s.close)
    const run = await sequentialLatency(s.url, 0.5)
    assert.ok(run.p50 >= 5 && run.p99 >= run.p50, `p50 ${run.p50}, p99 ${run.p99}`)
    // One at a time: half a second of 5 ms answers is at most ~100 requests.
    assert.ok(run.requests > 10 && run.requests <= 110, `${run.requests} requests`)
    assert.equal(run.errors, 0)
    assert.equal(s.connections(), 1)
  })

  it('counts answers other than 200 as errors', async (t) => {
    const s = await server((res, n) => {
      res.writeHead(n % 4 === 0 ? 503 : 200, { 'content-length': body.length }).end(body)
    })
    t.after(s.close)
    const run = await sequentialLatency(s.url, 0.2)
    assert.ok(run.requests > 20, `${run.requests} requests`)
    // Every 4th answer (the 200 warm-up requests end on a multiple of 4).
    assert.ok(
      Math.abs(run.errors - run.requests / 4) <= 1,
      `${run.errors} errors in ${run.requests}`,
    )
  })

  it('opens a new connection after an answer with Connection: close, as nginx sends', async (t) => {
    const s = await server((res, n) => {
      // Node's server closes the connection after this answer.
      if (n % 50 === 0) res.setHeader('connection', 'close')
      res.writeHead(200, { 'content-length': body.length }).end(body)
    })
    t.after(s.close)
    const run = await sequentialLatency(s.url, 0.3)
    assert.equal(run.errors, 0)
    assert.ok(s.connections() >= 5, `${s.connections()} connections`)
  })

  it('refuses an answer framed otherwise than by Content-Length, with the head in the error', async (t) => {
    const s = await server((res) => {
      res.write(body) // chunked: the length is not known when the head goes
      res.end()
    })
    t.after(s.close)
    await assert.rejects(sequentialLatency(s.url, 0.2), /does not expect: HTTP\/1\.1 200 OK/)
  })

  it('fails, not hangs, when the service closes the connection', async (t) => {
    const s = await server((res) => res.socket?.destroy())
    t.after(s.close)
    await assert.rejects(sequentialLatency(s.url, 0.2), /the connection closed/)
  })
})
