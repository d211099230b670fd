import assert from 'node:assert/strict'
import { createServer, request, type Server } from 'node:http'
import { after, before, describe, it } from 'node:test'
import { freePort } from '@mtc/testkit'
import { Mesh, type ProxyProc } from './fixture.ts'

/**
 * Responses are forwarded as they come: the head as soon as the service sent it (server-
 * sent events, long polls), then every chunk, through both proxies.
 */
const SERVICE = 'hello-stream'
/** The service's pause between its head and its first body chunk. */
const DELAY_MS = 2_000
const mesh = new Mesh()
let client: ProxyProc
let events: Server

before(async () => {
  await mesh.start()
  events = createServer((req, res) => {
    if (req.url === '/') {
      res.end('up\n')
      return
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.flushHeaders()
    const timer = setTimeout(() => res.end('data: first\n\n'), DELAY_MS)
    res.on('close', () => clearTimeout(timer))
  })
  const port = await freePort()
  await new Promise<void>((resolve) => events.listen(port, '127.0.0.1', resolve))
  await mesh.serviceProxy(SERVICE, port)
  client = await mesh.proxy([String(await freePort())])
  await mesh.routable(client.port, SERVICE)
})

after(async () => {
  await mesh.stop()
  events?.close()
})

/** Milliseconds until the response head, and until the first body byte. */
function timeHeadAndBody(port: number, path: string): Promise<{ head: number; body: number }> {
  const started = performance.now()
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      const head = performance.now() - started
      res.once('data', () => {
        resolve({ head, body: performance.now() - started })
        req.destroy()
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.setTimeout(15_000, () => req.destroy(new Error('no answer')))
    req.end()
  })
}

describe('proxy: streamed responses', () => {
  it('forwards the response head before the body, through both proxies', async (ctx) => {
    const t = await timeHeadAndBody(client.port, `/${SERVICE}/events`)
    ctx.diagnostic(
      `head after ${t.head.toFixed(1)} ms, first body byte after ${t.body.toFixed(0)} ms`,
    )
    // The head comes at once (a loopback hop or two); the body after the service's pause.
    assert.ok(t.body >= DELAY_MS * 0.9, `body after ${t.body.toFixed(0)} ms`)
    assert.ok(
      t.head < DELAY_MS / 2,
      `head after ${t.head.toFixed(0)} ms, body ${t.body.toFixed(0)} ms`,
    )
  })
})
