/** hello-world-server as a plain process: the endpoints the benchmarks rely on. */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { readFile } from 'node:fs/promises'
import { type IncomingMessage, request } from 'node:http'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { freePort, type Proc, REPO_ROOT, run, stopAll, waitFor } from '@mtc/testkit'

const BIN = join(REPO_ROOT, 'demos/helloworld/bin/hello-world-server.js')
/** Growth of the server while a 512 MB answer is pending: socket buffers, not the answer. */
const HELD_BOUND = 64 * 2 ** 20
let base: string
let server: Proc

/** The server's resident memory now (VmRSS), in bytes. */
async function serverRss(): Promise<number> {
  const status = await readFile(`/proc/${server.child.pid}/status`, 'utf8')
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]) * 1024
}

before(async () => {
  const port = await freePort()
  server = run(BIN, [String(port)], { env: { SERVICE_HOST: '127.0.0.1' } })
  await waitFor('hello-world-server listening', () => server.stdout().includes('listening'))
  base = `http://127.0.0.1:${port}`
})

after(stopAll)

test('GET / answers "Hello, world"', async () => {
  const res = await fetch(`${base}/`)
  assert.equal(res.status, 200)
  assert.equal(await res.text(), 'Hello, world\n')
})

test('GET /bytes/:n answers exactly n bytes with a Content-Length', async () => {
  // 0, less than one chunk, and several chunks with a partial last one.
  for (const n of [0, 1024, 3 * 64 * 1024 + 17]) {
    const res = await fetch(`${base}/bytes/${n}`)
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('content-length'), String(n))
    assert.equal(res.headers.get('content-type'), 'application/octet-stream')
    assert.equal((await res.arrayBuffer()).byteLength, n)
  }
})

test('GET /bytes/:n streams a large answer (512 MB) without holding it', async () => {
  const n = 512 * 1024 * 1024
  const before = await serverRss()
  // A client that reads the first bytes, then nothing for a while: a server that streams
  // waits for it; one that built the answer in memory holds all 512 MB by now.
  const req = request(`${base}/bytes/${n}`)
  req.end()
  const [res] = (await once(req, 'response')) as [IncomingMessage]
  assert.equal(res.headers['content-length'], String(n))
  let got = 0
  let other = 0
  // The body is the server's 'x' bytes: an untouched zero-filled buffer of 512 MB is never
  // resident, so a server that built one would pass the memory check below.
  const xs = Buffer.alloc(1024 * 1024, 'x')
  res.on('data', (c: Buffer) => {
    got += c.byteLength
    for (let at = 0; at < c.byteLength; at += xs.byteLength) {
      const part = c.subarray(at, at + xs.byteLength)
      if (!part.equals(xs.subarray(0, part.byteLength))) other++
    }
  })
  await waitFor('the first bytes', () => got > 0, { timeoutMs: 10_000, intervalMs: 10 })
  res.pause()
  let peak = 0
  for (let i = 0; i < 5; i++) {
    peak = Math.max(peak, (await serverRss()) - before)
    await sleep(200)
  }
  assert.ok(got < n / 4, `${got} bytes arrived while the client was not reading`)
  assert.ok(peak < HELD_BOUND, `the server grew by ${(peak / 2 ** 20).toFixed(0)} MB`)
  res.resume()
  await once(res, 'end')
  assert.equal(got, n)
  assert.equal(other, 0, 'chunks with bytes other than the x the server sends')
})

test('GET /bytes/:n refuses more than 1 GiB with 400', async () => {
  const res = await fetch(`${base}/bytes/${1024 ** 3 + 1}`)
  assert.equal(res.status, 400)
  assert.match(await res.text(), /at most 1073741824 bytes/)
})
