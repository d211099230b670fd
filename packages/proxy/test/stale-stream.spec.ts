import assert from 'node:assert/strict'
import { createServer, type Server, type Socket } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { freePort } from '@mtc/testkit'
import { http, Mesh, type ProxyProc } from './fixture.ts'

/**
 * A mesh stream is one connection to the service: a service may close an idle keep-alive
 * connection just as the gateway writes the next request on it (the race every HTTP
 * client with a connection pool has). Nothing of an answer came, and the service may or
 * may not have seen the request: an idempotent request is sent again on a new stream, as
 * undici does; any other fails clearly with 502 ERR_SERVICE_RESET.
 */
const SERVICE = 'hello-stale'
const mesh = new Mesh()
let client: ProxyProc
let server: Server
/** Paths in the order the service read them. */
const seen: string[] = []
const sockets = new Set<Socket>()

/**
 * A raw HTTP/1.1 service: answers every request 200 with keep-alive, except that a request
 * for `/drop*` on a connection that already answered one closes that connection instead
 * (the service gave up on it just as the request came).
 */
function startService(port: number): Promise<void> {
  server = createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    let answered = 0
    let buffered = ''
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('latin1')
      for (;;) {
        const end = buffered.indexOf('\r\n\r\n')
        if (end < 0) return
        const head = buffered.slice(0, end)
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0)
        if (buffered.length < end + 4 + length) return
        buffered = buffered.slice(end + 4 + length)
        const path = head.split(' ')[1] ?? ''
        seen.push(path)
        if (path.startsWith('/drop') && answered > 0) {
          socket.destroy()
          return
        }
        answered++
        const body = `answered ${path}\n`
        socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`)
      }
    })
  })
  return new Promise((resolve) => server.listen(port, '127.0.0.1', resolve))
}

before(async () => {
  await mesh.start()
  const port = await freePort()
  await startService(port)
  await mesh.serviceProxy(SERVICE, port)
  client = await mesh.proxy([String(await freePort())])
  await mesh.routable(client.port, SERVICE)
})

after(async () => {
  for (const s of sockets) s.destroy()
  server?.close()
  await mesh.stop()
})

describe('proxy: a warm stream the service closed as the request was written', () => {
  it('a GET is sent again on a new stream and answered', async () => {
    // The request before leaves a warm stream whose connection answered once: the next
    // request takes it (the most recently used first).
    assert.equal((await http(client.port, `/${SERVICE}/warm`)).status, 200)
    const before = seen.length
    const res = await http(client.port, `/${SERVICE}/drop-get`)
    assert.equal(res.status, 200, res.body.toString())
    assert.equal(res.body.toString(), 'answered /drop-get\n')
    // Once on the closed connection, once on a new one.
    assert.deepEqual(seen.slice(before), ['/drop-get', '/drop-get'])
  })

  it('a POST is not sent again: 502 ERR_SERVICE_RESET', async () => {
    assert.equal((await http(client.port, `/${SERVICE}/warm`)).status, 200)
    const before = seen.length
    const res = await http(client.port, `/${SERVICE}/drop-post`, {
      method: 'POST',
      body: Buffer.from('once only'),
    })
    assert.equal(res.status, 502, res.body.toString())
    assert.equal(res.headers['x-mtc-error'], 'ERR_SERVICE_RESET')
    assert.deepEqual(seen.slice(before), ['/drop-post'])
    // The gateway goes on: the next request is answered on a new stream.
    assert.equal((await http(client.port, `/${SERVICE}/after`)).status, 200)
  })
})
