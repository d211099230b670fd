import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { freePort, runToEnd, waitFor } from '@mtc/testkit'
import { http, Mesh, type ProxyProc } from './fixture.ts'

const mesh = new Mesh()
let client: ProxyProc

before(async () => {
  await mesh.start()
  const hello = await mesh.hello('e1')
  await mesh.serviceProxy('hello-errors', hello.port)
  client = await mesh.proxy([String(await freePort())], ['--headers-timeout', '1s'])
  await mesh.routable(client.port, 'hello-errors')
})

after(async () => {
  await mesh.stop()
})

/** Sends raw bytes on a new connection; resolves with everything the gateway answered. */
function raw(port: number, data: string, options: { endAfterMs?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')))
    socket.on('error', reject)
    socket.setTimeout(options.endAfterMs ?? 10_000, () => socket.destroy())
    socket.write(data)
  })
}

describe('proxy: errors are HTTP answers with a code', () => {
  it('404 ERR_UNKNOWN_SERVICE for a service nobody provides', async () => {
    const res = await http(client.port, '/no-such-service/x')
    assert.equal(res.status, 404)
    assert.equal(res.headers['x-mtc-error'], 'ERR_UNKNOWN_SERVICE')
    assert.match(res.body.toString(), /^ERR_UNKNOWN_SERVICE: /)
  })

  it('503 ERR_NO_INSTANCE when the only instance’s service is down', async () => {
    await mesh.serviceProxy('hello-down', await freePort())
    const res = await waitFor(
      'the instance of hello-down to be discovered',
      async () => {
        const r = await http(client.port, '/hello-down/')
        return r.status === 503 ? r : undefined
      },
      { timeoutMs: 20_000, intervalMs: 300 },
    )
    assert.equal(res.headers['x-mtc-error'], 'ERR_NO_INSTANCE')
    assert.equal(res.headers['retry-after'], '1')
  })

  for (const [path, code] of [
    ['/', 'ERR_BAD_PATH'],
    ['//x', 'ERR_BAD_PATH'],
    ['/Not_A_Name/x', 'ERR_BAD_SERVICE_NAME'],
    ['/-dash/x', 'ERR_BAD_SERVICE_NAME'],
  ]) {
    it(`400 ${code} for ${path}`, async () => {
      const res = await http(client.port, path)
      assert.equal(res.status, 400)
      assert.equal(res.headers['x-mtc-error'], code)
    })
  }

  it('431 ERR_HEADERS_TOO_LARGE for a request head over 16 KiB, and keeps serving', async () => {
    const answer = await raw(
      client.port,
      `GET /hello-errors/ HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(17 * 1024)}\r\n\r\n`,
    )
    assert.match(answer, /^HTTP\/1\.1 431 /)
    assert.match(answer, /x-mtc-error: ERR_HEADERS_TOO_LARGE/)
    assert.equal((await http(client.port, '/hello-errors/')).status, 200)
  })

  it('400 ERR_BAD_REQUEST for garbage', async () => {
    const answer = await raw(client.port, 'NOT HTTP AT ALL\r\n\r\n')
    assert.match(answer, /^HTTP\/1\.1 400 /)
    assert.match(answer, /x-mtc-error: ERR_BAD_REQUEST/)
  })

  it('408 ERR_REQUEST_TIMEOUT for a client that sends its head too slowly; others are served', async () => {
    const slow = raw(client.port, 'GET /hello-errors/ HTTP/1.1\r\nHost: x\r\n')
    // Meanwhile the gateway serves everyone else.
    for (let i = 0; i < 5; i++)
      assert.equal((await http(client.port, '/hello-errors/')).status, 200)
    const answer = await slow
    assert.match(answer, /^HTTP\/1\.1 408 /)
    assert.match(answer, /x-mtc-error: ERR_REQUEST_TIMEOUT/)
  })

  it('501 ERR_NOT_SUPPORTED for CONNECT (upgrades are proxied: upgrade.spec.ts)', async () => {
    const answer = await raw(
      client.port,
      'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n',
    )
    assert.match(answer, /^HTTP\/1\.1 501 /)
    assert.match(answer, /x-mtc-error: ERR_NOT_SUPPORTED/)
  })
})

describe('proxy command line', () => {
  let dir: string
  before(() => {
    dir = mesh.dir.path
  })

  const cases: Array<[string, string[], RegExp, Record<string, string>?]> = [
    ['no PORT', [], /missing argument/],
    ['a bad PORT', ['http'], /PORT: "http" is not a TCP port/],
    ['SERVICE without ADDRESS', ['8080', 'svc'], /ADDRESS missing/],
    ['a bad SERVICE', ['8080', 'Bad_Name', '127.0.0.1:1'], /SERVICE: "Bad_Name"/],
    ['a bad ADDRESS', ['8080', 'svc', 'localhost'], /ADDRESS: "localhost" is not HOST:PORT/],
    ['too many arguments', ['1', 'a', 'b:1', 'x'], /unexpected argument "x"/],
    ['an unknown flag', ['--bogus', '8080'], /Unknown option '--bogus'/],
    ['a bad duration', ['--headers-timeout', 'soon', '8080'], /--headers-timeout/],
    ['a missing config file', ['--config', '/nonexistent.json', '8080'], /--config: cannot read/],
    [
      'a bad config file',
      ['--config', 'BADCONFIG', '8080'],
      /Perf\.HardReq\.RTT must be a positive/,
    ],
    ['a bad METRICS_PORT', ['8080', 'svc', '127.0.0.1:1'], /METRICS_PORT/, { METRICS_PORT: 'x' }],
  ]
  for (const [what, args, pattern, env] of cases) {
    it(`exits 2 with one line on ${what}`, async () => {
      const badConfig = join(dir, 'bad-config.json')
      await writeFile(badConfig, '{"Perf":{"HardReq":{"RTT":"fast"}}}')
      const argv = ['--no-psk', ...args.map((a) => (a === 'BADCONFIG' ? badConfig : a))]
      const { code, stderr } = await runToEnd('proxy', argv, {
        env: { P2P_PSK: '', P2P_PSK_FILE: '', ...env },
      })
      assert.equal(code, 2, stderr)
      assert.equal(stderr.trimEnd().split('\n').length, 1, stderr)
      assert.match(stderr, /^proxy: /)
      assert.match(stderr, pattern)
    })
  }

  it('prints help with the usage and exits 0', async () => {
    const help = await runToEnd('proxy', ['--help'])
    assert.equal(help.code, 0)
    assert.match(help.stdout, /Usage: proxy \[flags\] PORT \[SERVICE ADDRESS\]/)
    assert.match(help.stdout, /--config FILE/)
  })
})
