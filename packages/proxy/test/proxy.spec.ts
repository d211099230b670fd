import assert from 'node:assert/strict'
import { Agent, request } from 'node:http'
import { after, before, describe, it } from 'node:test'
import { freePort, run, waitFor } from '@mtc/testkit'
import { CALLER_BIN, http, Mesh, type ProxyProc, randomBody, sha256 } from './fixture.ts'
import { rawExchange, statusCodes } from './raw-http.ts'

const SERVICE = 'hello-world-server'
const mesh = new Mesh()
let client: ProxyProc
let service: ProxyProc

before(async () => {
  await mesh.start()
  const hello = await mesh.hello('h1')
  service = await mesh.serviceProxy(SERVICE, hello.port)
  client = await mesh.proxy([String(await freePort())])
  await mesh.routable(client.port, SERVICE)
})

after(async () => {
  await mesh.stop()
})

describe('proxy: client gateway → overlay → service proxy → service', () => {
  it('GET: status, body and the service’s headers come through', async () => {
    const res = await http(client.port, `/${SERVICE}/`)
    assert.equal(res.status, 200)
    assert.equal(res.body.toString(), 'Hello, world\n')
    assert.equal(res.headers['x-instance'], 'h1')
    assert.equal(res.headers['content-type'], 'text/plain; charset=utf-8')
    // `/<service>` alone is the service's root.
    assert.equal((await http(client.port, `/${SERVICE}`)).body.toString(), 'Hello, world\n')
  })

  it('keeps the query string and end-to-end headers, drops hop-by-hop ones, adds forwarding', async () => {
    const res = await http(client.port, `/${SERVICE}/inspect?a=1&b=two%20words`, {
      headers: {
        'x-custom': 'kept',
        connection: 'keep-alive, x-hop',
        'x-hop': 'dropped',
        'proxy-authorization': 'Basic c2VjcmV0',
        'x-forwarded-for': '10.1.2.3',
        cookie: ['a=1', 'b=2'],
      },
    })
    assert.equal(res.status, 200)
    const seen = JSON.parse(res.body.toString()) as { url: string; headers: Record<string, string> }
    assert.equal(seen.url, '/inspect?a=1&b=two%20words')
    assert.equal(seen.headers['x-custom'], 'kept')
    assert.equal(seen.headers['x-hop'], undefined)
    assert.equal(seen.headers['proxy-authorization'], undefined)
    assert.equal(seen.headers.host, SERVICE)
    assert.equal(seen.headers['x-forwarded-for'], '10.1.2.3, 127.0.0.1')
    assert.match(seen.headers.forwarded, /^for=127\.0\.0\.1;host="127\.0\.0\.1:\d+";proto=http$/)
    assert.match(seen.headers['x-forwarded-host'], /^127\.0\.0\.1:\d+$/)
    assert.equal(seen.headers.cookie, 'a=1; b=2')
  })

  it('preserves status codes, HEAD and empty answers', async () => {
    for (const code of [201, 204, 301, 404, 418, 500, 503]) {
      const res = await http(client.port, `/${SERVICE}/status/${code}`)
      assert.equal(res.status, code)
      // A service's own 5xx is not a proxy error.
      assert.equal(res.headers['x-mtc-error'], undefined)
    }
    const head = await http(client.port, `/${SERVICE}/`, { method: 'HEAD' })
    assert.equal(head.status, 200)
    assert.equal(head.body.byteLength, 0)
    assert.equal(head.headers['content-length'], '13')
  })

  it('streams a 50 MB chunked POST to the service and its echo back, byte-exact', async () => {
    const body = randomBody(50 * 1024 * 1024)
    const res = await http(client.port, `/${SERVICE}/echo`, {
      method: 'POST',
      body: body.stream,
      headers: { 'content-type': 'application/octet-stream' },
      timeoutMs: 120_000,
    })
    assert.equal(res.status, 200)
    assert.equal(res.body.byteLength, 50 * 1024 * 1024)
    assert.equal(sha256(res.body), body.sha256())
  })

  it('streams a content-length body too, and keeps the length', async () => {
    const data = Buffer.alloc(3 * 1024 * 1024 + 7, 'x')
    const res = await http(client.port, `/${SERVICE}/echo`, {
      method: 'POST',
      body: data,
      headers: { 'content-length': String(data.byteLength) },
    })
    assert.equal(res.status, 200)
    assert.equal(res.headers['content-length'], String(data.byteLength))
    assert.equal(sha256(res.body), sha256(data))
  })

  it('streams a slow response: the first bytes arrive before the last are produced', async () => {
    const started = performance.now()
    const arrivals: number[] = []
    await new Promise<void>((resolve, reject) => {
      request(
        { host: '127.0.0.1', port: client.port, path: `/${SERVICE}/slow?ms=300&chunks=5` },
        (res) => {
          res.on('data', () => arrivals.push(performance.now() - started))
          res.on('end', resolve)
          res.on('error', reject)
        },
      )
        .on('error', reject)
        .end()
    })
    const first = arrivals[0]
    const last = arrivals[arrivals.length - 1]
    assert.ok(arrivals.length >= 3, `${arrivals.length} chunks`)
    assert.ok(last - first > 800, `first at ${first} ms, last at ${last} ms`)
  })

  it('reuses warm streams: fewer mesh streams than requests, and client keep-alive', async () => {
    const before = await service.metric('mtc_proxy_inbound_streams_total')
    const agent = new Agent({ keepAlive: true, maxSockets: 1 })
    const n = 30
    let reused = 0
    for (let i = 0; i < n; i++) {
      const res = await http(client.port, `/${SERVICE}/`, { agent })
      assert.equal(res.status, 200)
      if (res.reusedSocket) reused++
    }
    agent.destroy()
    const opened = (await service.metric('mtc_proxy_inbound_streams_total')) - before
    assert.ok(opened < n / 2, `${opened} streams for ${n} requests`)
    assert.ok(reused >= n - 1, `client connection reused ${reused} times`)
  })

  it('pipelined requests on one client connection come back in order, bodies and all', async () => {
    const answer = await rawExchange(client.port, [
      `GET /${SERVICE}/status/201 HTTP/1.1\r\nHost: x\r\n\r\n` +
        `POST /${SERVICE}/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n0\r\n\r\n` +
        `POST /${SERVICE}/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nsecond` +
        `HEAD /${SERVICE}/ HTTP/1.1\r\nHost: x\r\n\r\n` +
        `GET /${SERVICE}/inspect HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    ])
    assert.deepEqual(statusCodes(answer), [201, 200, 200, 200, 200], answer)
    const first = answer.indexOf('first')
    const second = answer.indexOf('second')
    const inspect = answer.indexOf('"url":"/inspect"')
    assert.ok(first > 0 && second > first && inspect > second, answer)
    // The HEAD answer is its head alone (with the length a GET would have).
    const head = answer.split(/(?=HTTP\/1\.1 \d{3} )/)[3]
    assert.match(head, /^HTTP\/1\.1 200 OK\r\n[\s\S]*content-length: 13\r\n[\s\S]*\r\n\r\n$/i)
    assert.doesNotMatch(head, /Hello/)
  })

  it('an HTTP/1.0 client gets a whole answer, delimited by the connection’s end when it has no length', async () => {
    const answer = await rawExchange(client.port, [
      `GET /${SERVICE}/slow?ms=10&chunks=3 HTTP/1.0\r\n\r\n`,
    ])
    assert.match(answer, /^HTTP\/1\.1 200 /)
    assert.doesNotMatch(answer, /transfer-encoding/i)
    assert.match(answer, /Connection: close\r\n/i)
    assert.match(answer, /\r\n\r\nchunk 1 at \d+\nchunk 2 at \d+\nchunk 3 at \d+\n$/)
  })

  it('service-to-service: hello-caller calls hello-world-server through its own proxy', async () => {
    const callerPort = await freePort()
    const callerProxyPort = await freePort()
    const caller = run(CALLER_BIN, [String(callerPort)], {
      env: { SERVICE_HOST: '127.0.0.1', PROXY_PORT: String(callerProxyPort) },
    })
    await waitFor('hello-caller listening', () => caller.stdout().includes('listening'))
    await mesh.proxy([String(callerProxyPort), 'hello-caller', `127.0.0.1:${callerPort}`])
    await mesh.routable(client.port, 'hello-caller')
    const res = await http(client.port, '/hello-caller/')
    assert.equal(res.status, 200)
    assert.equal(res.body.toString(), 'hello-caller asked hello-world-server: 200 Hello, world\n')
  })

  it('reports status (service mode) and metrics', async () => {
    const status = JSON.parse((await http(service.metricsPort, '/status')).body.toString()) as {
      service: string
      ready: boolean
      idleSeconds: number
    }
    assert.equal(status.service, SERVICE)
    assert.equal(status.ready, true)
    assert.ok(status.idleSeconds >= 0 && status.idleSeconds < 60)
    const text = await client.metrics()
    const { metricValue } = await import('@mtc/testkit')
    assert.ok(
      (metricValue(text, 'mtc_proxy_requests_total', { service: SERVICE, code: '200' }) ?? 0) > 10,
    )
    assert.ok((metricValue(text, 'mtc_proxy_upstream_rtt_seconds', { service: SERVICE }) ?? 0) > 0)
    assert.match(text, /^mtc_proxy_request_duration_seconds_bucket\{/m)
    assert.match(text, /^# HELP mtc_proxy_retries_total /m)
    assert.match(text, /^# HELP mtc_proxy_instance_changes_total /m)
  })
})
