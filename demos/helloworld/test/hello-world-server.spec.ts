/** hello-world-server as a plain process: the endpoints the benchmarks rely on. */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { freePort, REPO_ROOT, run, stopAll, waitFor } from '@mtc/testkit'

const BIN = join(REPO_ROOT, 'demos/helloworld/bin/hello-world-server.js')
let base: string

before(async () => {
  const port = await freePort()
  const server = run(BIN, [String(port)], { env: { SERVICE_HOST: '127.0.0.1' } })
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

test('GET /bytes/:n streams a large answer (100 MB) without holding it', async () => {
  const n = 100 * 1024 * 1024
  const res = await fetch(`${base}/bytes/${n}`)
  let got = 0
  for await (const chunk of res.body as AsyncIterable<Uint8Array>) got += chunk.byteLength
  assert.equal(got, n)
})

test('GET /bytes/:n refuses more than 1 GiB with 400', async () => {
  const res = await fetch(`${base}/bytes/${1024 ** 3 + 1}`)
  assert.equal(res.status, 400)
  assert.match(await res.text(), /at most 1073741824 bytes/)
})
