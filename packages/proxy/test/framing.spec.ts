import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { MeshNode, readSwarmKeyFile } from '@mtc/p2pnode'
import { freePort, waitFor } from '@mtc/testkit'
import { multiaddr } from '@multiformats/multiaddr'
import { HTTP_PROTOCOL } from '../src/constants.ts'
import { StreamDuplex } from '../src/stream-duplex.ts'
import { http, Mesh, type ProxyProc } from './fixture.ts'
import { rawExchange, statusCodes } from './raw-http.ts'

/**
 * Request smuggling: the gateway decides a request's framing before it drops any
 * hop-by-hop header, and refuses what is ambiguous (400, connection closed) before it
 * reaches an instance, so a reused mesh stream never carries a request nobody sent.
 */
const SERVICE = 'hello-framing'
const mesh = new Mesh()
let client: ProxyProc
let service: ProxyProc
let node: MeshNode | undefined

before(async () => {
  await mesh.start()
  const hello = await mesh.hello('f1')
  service = await mesh.serviceProxy(SERVICE, hello.port)
  client = await mesh.proxy([String(await freePort())])
  await mesh.routable(client.port, SERVICE)
})

after(async () => {
  await node?.stop()
  await mesh.stop()
})

/** Requests the instance forwarded to its service, whatever the answer. */
async function inboundRequests(): Promise<number> {
  const text = await service.metrics()
  let sum = 0
  for (const m of text.matchAll(/^mtc_proxy_inbound_requests_total(?:\{[^}]*\})? (\d+)/gm))
    sum += Number(m[1])
  return sum
}

const GET = (path: string): string => `GET /${SERVICE}${path} HTTP/1.1\r\nHost: x\r\n\r\n`

describe('proxy: request framing', () => {
  it('a body smuggled behind `Connection: content-length` never reaches a reused stream', async () => {
    const smuggled = `GET /status/418 HTTP/1.1\r\nHost: ${SERVICE}\r\n\r\n`
    for (let round = 0; round < 3; round++) {
      const before = await inboundRequests()
      // The attacker's connection stays open (keep-alive): it is dropped after 1 s.
      const attack = await rawExchange(
        client.port,
        [
          `GET /${SERVICE}/ HTTP/1.1\r\nHost: x\r\nContent-Length: ${smuggled.length}\r\n` +
            `Connection: keep-alive, content-length\r\n\r\n${smuggled}`,
        ],
        { timeoutMs: 1000 },
      )
      // The victim reuses the warm stream the attacker's request went over (LIFO pool).
      const victim = await rawExchange(client.port, [
        `GET /${SERVICE}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
      ])
      // The instance saw the victim's request only: none that nobody sent.
      await sleep(200) // its count is taken when its answer is done
      assert.equal((await inboundRequests()) - before, 1, 'requests the instance read')
      assert.deepEqual(statusCodes(victim), [200], victim)
      assert.match(victim, /Hello, world\n$/)
      assert.deepEqual(statusCodes(attack), [400], attack)
      assert.match(attack, /x-mtc-error: ERR_BAD_FRAMING/i)
    }
  })

  const ambiguous: Array<[string, string]> = [
    [
      'Connection names Content-Length',
      'Content-Length: 5\r\nConnection: content-length\r\n\r\nhello',
    ],
    [
      'Connection names Transfer-Encoding',
      'Transfer-Encoding: chunked\r\nConnection: Transfer-Encoding\r\n\r\n0\r\n\r\n',
    ],
    ['Connection names Host', 'Connection: keep-alive, host\r\n\r\n'],
    [
      'Content-Length and Transfer-Encoding',
      'Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    ],
    [
      'Transfer-Encoding and Content-Length',
      'Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n',
    ],
    ['two different Content-Lengths', 'Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!'],
    ['two equal Content-Lengths', 'Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello'],
    ['a Content-Length list', 'Content-Length: 5, 6\r\n\r\nhello!'],
    ['a signed Content-Length', 'Content-Length: +5\r\n\r\nhello'],
    ['a hex Content-Length', 'Content-Length: 0x5\r\n\r\nhello'],
    ['a negative Content-Length', 'Content-Length: -1\r\n\r\nhello'],
    ['a huge Content-Length', 'Content-Length: 99999999999999999999999\r\n\r\nhello'],
    ['an empty Content-Length', 'Content-Length: \r\n\r\nhello'],
    ['Transfer-Encoding: gzip', 'Transfer-Encoding: gzip\r\n\r\nhello'],
    ['Transfer-Encoding: chunked, gzip', 'Transfer-Encoding: chunked, gzip\r\n\r\nhello'],
    ['Transfer-Encoding: gzip, chunked', 'Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n'],
    ['Transfer-Encoding: chunked, chunked', 'Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n'],
    [
      'Transfer-Encoding twice',
      'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    ],
    ['Transfer-Encoding: xchunked', 'Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n'],
    ['a space before the colon', 'Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n'],
    ['an obs-fold', 'X-A: a\r\n b\r\n\r\n'],
    ['an obs-fold in Transfer-Encoding', 'Transfer-Encoding: gzip,\r\n chunked\r\n\r\n0\r\n\r\n'],
    ['two Hosts', 'Host: y\r\n\r\n'],
  ]
  for (const [what, rest] of ambiguous) {
    it(`400 for ${what}, without reaching the service`, async () => {
      const before = await inboundRequests()
      const answer = await rawExchange(client.port, [
        `POST /${SERVICE}/echo HTTP/1.1\r\nHost: x\r\n${rest}${GET('/')}`,
      ])
      // One answer, a 400, then the connection is closed: the pipelined GET is not read.
      assert.deepEqual(statusCodes(answer), [400], answer)
      assert.equal(await inboundRequests(), before)
    })
  }

  it('400 for Transfer-Encoding in an HTTP/1.0 request', async () => {
    const before = await inboundRequests()
    const answer = await rawExchange(client.port, [
      `POST /${SERVICE}/echo HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    ])
    assert.deepEqual(statusCodes(answer), [400], answer)
    assert.equal(await inboundRequests(), before)
  })

  it('unambiguous framings go through: length, chunked with extensions, a GET with a body', async () => {
    const answer = await rawExchange(client.port, [
      `POST /${SERVICE}/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello`,
      `POST /${SERVICE}/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n5;a=b\r\nworld\r\n0\r\n\r\n`,
      `GET /${SERVICE}/inspect HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc`,
    ])
    assert.deepEqual(statusCodes(answer), [200, 200, 200], answer)
    assert.match(answer, /\r\n\r\nhello/)
    assert.match(answer, /world/)
    assert.match(answer, /"content-length":"3"/)
    assert.equal((await http(client.port, `/${SERVICE}/`)).status, 200)
  })

  it('a peer with the key that smuggles on its own stream reaches only its own service connection', async () => {
    // The instance relays bytes (it frames nothing): each stream is its own connection to
    // the service, so what a peer smuggles is answered on that peer's stream only.
    node = await MeshNode.startClient({ role: 'test', psk: await readSwarmKeyFile(mesh.pskFile) })
    const [addr] = (await readFile(service.addrFile, 'utf8')).trim().split('\n')
    const open = async (): Promise<{ duplex: StreamDuplex; text: () => string }> => {
      const stream = await node!.libp2p.dialProtocol(multiaddr(addr), HTTP_PROTOCOL)
      const duplex = new StreamDuplex(stream, { allowHalfOpen: false })
      const chunks: Buffer[] = []
      duplex.on('data', (c: Buffer) => chunks.push(c))
      duplex.on('error', () => {})
      return { duplex, text: () => Buffer.concat(chunks).toString('latin1') }
    }
    const attacker = await open()
    const victim = await open()
    attacker.duplex.write(
      `GET / HTTP/1.1\r\nHost: ${SERVICE}\r\nContent-Length: 5\r\n` +
        `Connection: content-length\r\n\r\nhelloGET /status/418 HTTP/1.1\r\nHost: x\r\n\r\n`,
    )
    await waitFor('the attacker’s two answers', () => statusCodes(attacker.text()).length === 2)
    victim.duplex.write(`GET /inspect HTTP/1.1\r\nHost: ${SERVICE}\r\n\r\n`)
    await waitFor('the victim’s answer', () => statusCodes(victim.text()).length === 1)
    await sleep(200)
    assert.deepEqual(statusCodes(victim.text()), [200], victim.text())
    assert.match(victim.text(), /"url":"\/inspect"/)
    assert.deepEqual(statusCodes(attacker.text()), [200, 418], attacker.text())
    attacker.duplex.destroy()
    victim.duplex.destroy()
  })
})
