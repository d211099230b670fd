import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { freePort, waitFor } from '@mtc/testkit'
import { http, Mesh, type ProxyProc } from './fixture.ts'
import { rawExchange } from './raw-http.ts'

/**
 * Clients, peers and services that go away in the middle of a message: the proxies on
 * both sides survive, every in-flight count returns to 0, and the next request is served.
 */
const SERVICE = 'hello-abort'
const CUT = 'hello-cut'
const mesh = new Mesh()
let client: ProxyProc
let service: ProxyProc
let cutter: Server

before(async () => {
  await mesh.start()
  const hello = await mesh.hello('a1')
  service = await mesh.serviceProxy(SERVICE, hello.port)
  // A service that answers a head and part of the body, then closes the connection.
  cutter = createServer((socket) => {
    socket.on('error', () => {})
    socket.once('data', () => {
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n')
      socket.write('x'.repeat(1000))
      setTimeout(() => socket.destroy(), 100)
    })
  })
  const cutPort = await freePort()
  await new Promise<void>((resolve) => cutter.listen(cutPort, '127.0.0.1', resolve))
  await mesh.serviceProxy(CUT, cutPort)
  client = await mesh.proxy([String(await freePort())])
  await mesh.routable(client.port, SERVICE)
})

after(async () => {
  await mesh.stop()
  cutter?.close()
})

const HEAD = (path: string, extra: string): string =>
  `POST ${path} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`
const PARTIAL = 'y'.repeat(1000)

const cases: Array<[string, Array<string | Buffer>]> = [
  ['a Content-Length body cut after 1,000 bytes', ['Content-Length: 100000\r\n', PARTIAL]],
  [
    'a Content-Length body with Expect: 100-continue cut after 1,000 bytes',
    ['Content-Length: 100000\r\nExpect: 100-continue\r\n', PARTIAL],
  ],
  ['a chunked body cut mid-chunk', ['Transfer-Encoding: chunked\r\n', `2710\r\n${PARTIAL}`]],
  [
    'a chunked body with Expect: 100-continue cut mid-chunk',
    ['Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n', `2710\r\n${PARTIAL}`],
  ],
  ['a malformed chunk', ['Transfer-Encoding: chunked\r\n', 'zz\r\nhello\r\n0\r\n\r\n']],
]

async function alive(proxy: ProxyProc, port: number, path: string): Promise<void> {
  assert.equal(proxy.proc.child.exitCode, null, `proxy exited: ${proxy.proc.stderr()}`)
  const res = await http(port, path)
  assert.equal(res.status, 200, res.body.toString())
}

async function settled(proxy: ProxyProc, name: string): Promise<void> {
  await waitFor(`${name} back to 0`, async () => (await proxy.metric(name)) === 0, {
    timeoutMs: 10_000,
  })
}

describe('proxy: a client that goes away mid-body', () => {
  for (const [what, [headers, body]] of cases) {
    it(`client gateway survives ${what}, and serves the next request`, async () => {
      // The body starts once the request is forwarded, then the client is gone: at once,
      // and once the service echoed part of it.
      for (const abortAfterMs of [0, 300]) {
        await rawExchange(client.port, [HEAD(`/${SERVICE}/echo`, headers as string), body], {
          pauseMs: 200,
          abortAfterMs,
        })
      }
      await alive(client, client.port, `/${SERVICE}/`)
      await settled(client, 'mtc_proxy_requests_in_flight')
      // The instance's relays end with their streams (warm ones after the idle timeout).
      await settled(service, 'mtc_proxy_inbound_streams_open')
      await alive(service, client.port, `/${SERVICE}/`)
    })

    it(`service-mode gateway survives ${what}`, async () => {
      await rawExchange(service.port, [HEAD(`/${SERVICE}/echo`, headers as string), body], {
        pauseMs: 200,
        abortAfterMs: 300,
      })
      assert.equal(service.proc.child.exitCode, null, `proxy exited: ${service.proc.stderr()}`)
      await settled(service, 'mtc_proxy_requests_in_flight')
      await alive(service, client.port, `/${SERVICE}/`)
    })
  }

  it('a client gone before its body was forwarded (waiting for an instance)', async () => {
    // A service nobody provides: the request waits for the lookup while the client leaves.
    await rawExchange(
      client.port,
      [HEAD('/hello-nobody/x', 'Content-Length: 100000\r\n'), PARTIAL],
      {
        pauseMs: 10,
        abortAfterMs: 20,
      },
    )
    await alive(client, client.port, `/${SERVICE}/`)
    await settled(client, 'mtc_proxy_requests_in_flight')
  })

  it('a service that closes mid-response: the client sees the cut, both proxies live on', async () => {
    // Until the instance is discovered the answer is an error; then the cut 200.
    const answer = await waitFor(
      `${CUT} routable`,
      async () => {
        const a = await rawExchange(client.port, [`GET /${CUT}/ HTTP/1.1\r\nHost: x\r\n\r\n`])
        return /^HTTP\/1\.1 200 /.test(a) ? a : undefined
      },
      { timeoutMs: 20_000, intervalMs: 250 },
    )
    assert.ok(answer.length < 100_000, 'the answer is cut short')
    await alive(client, client.port, `/${SERVICE}/`)
    await settled(client, 'mtc_proxy_requests_in_flight')
  })
})
