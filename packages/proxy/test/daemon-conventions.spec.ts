import assert from 'node:assert/strict'
import { once } from 'node:events'
import { request } from 'node:http'
import { after, before, describe, it } from 'node:test'
import { freePort, runToEnd, waitFor } from '@mtc/testkit'
import { http, Mesh } from './fixture.ts'

/**
 * The root README's conventions for every daemon (issue 19.7): a bad flag or value is one
 * line on stderr and exit 2; SIGINT/SIGTERM stop gracefully, a second signal exits at
 * once; /healthz answers 503 while stopping.
 */

/** Per binary: inputs that are wrong before anything starts. */
const BAD_INPUT: Record<string, string[][]> = {
  allocator: [
    ['--no-such-flag'],
    ['--no-psk', '--metrics', '127.0.0.1:99999'],
    ['--no-psk', '--max-instances', 'many'],
  ],
  'hl-service': [
    ['--no-such-flag'],
    ['--no-psk', '--metrics', 'nowhere:x'],
    ['--no-psk', '--listen', 'not-a-multiaddr'],
  ],
  'mtc-keygen': [['--no-such-flag'], ['no-such-command'], ['identity', '--key-file']],
  'ping-monitor': [['--no-such-flag'], ['--no-psk', '--interval', 'soon']],
  proxy: [['--no-such-flag'], ['--no-psk', '--allocation-timeout', 'never', '4200']],
}

describe('daemon conventions: bad input', () => {
  for (const [bin, cases] of Object.entries(BAD_INPUT)) {
    it(`${bin}: a bad flag or value is exit 2 with one line on stderr`, async () => {
      for (const args of cases) {
        const r = await runToEnd(bin, args, { timeoutMs: 30_000 })
        const what = `${bin} ${args.join(' ')}: ${JSON.stringify(r.stderr)}`
        assert.equal(r.code, 2, what)
        assert.match(r.stderr, new RegExp(`^${bin}: [^\\n]+\\n$`), what)
        assert.equal(r.stdout, '', what)
      }
    })
  }
})

describe('daemon conventions: stopping', { timeout: 120_000 }, () => {
  const mesh = new Mesh()
  let gatewayPort = 0

  before(async () => {
    await mesh.start()
    const hello = await mesh.hello('h1')
    await mesh.serviceProxy('conventions', hello.port)
    gatewayPort = await freePort()
  })

  after(async () => {
    await mesh.stop()
  })

  it('/healthz is 503 while a proxy drains, and a second SIGTERM exits at once', async () => {
    const client = await mesh.proxy([String(gatewayPort)])
    await mesh.routable(client.port, 'conventions')
    const healthz = async () => (await http(client.metricsPort, '/healthz')).status
    assert.equal(await healthz(), 200)

    // A request in flight for 30 s: the gateway's graceful stop waits for it (up to 10 s).
    const inFlight = request({
      host: '127.0.0.1',
      port: client.port,
      path: '/conventions/slow?ms=1000&chunks=30',
      agent: false,
    })
    inFlight.on('error', () => {}) // cut when the proxy exits
    inFlight.end()
    const [res] = (await once(inFlight, 'response')) as [import('node:http').IncomingMessage]
    assert.equal(res.statusCode, 200)
    res.on('error', () => {})
    res.resume()

    client.proc.child.kill('SIGTERM')
    // Stopping: still running, metrics still served, liveness says no.
    const status = await waitFor(
      '/healthz to answer 503',
      async () => {
        assert.equal(client.proc.child.exitCode, null, 'the proxy stopped before draining')
        const s = await healthz()
        return s === 503 ? s : undefined
      },
      { timeoutMs: 5_000, intervalMs: 50 },
    )
    assert.equal(status, 503)
    assert.equal(client.proc.child.exitCode, null, 'still draining')

    // The operator insists: the second signal ends it now, not after the drain.
    const second = performance.now()
    client.proc.child.kill('SIGTERM')
    const code = await client.proc.exited
    const tookMs = performance.now() - second
    assert.equal(code, 143, client.proc.stderr())
    assert.ok(tookMs < 5_000, `exited ${tookMs.toFixed(0)} ms after the second signal`)
    inFlight.destroy()
  })
})
