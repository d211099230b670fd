import assert from 'node:assert/strict'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { freePort, tempDir } from '@mtc/testkit'
import { http, Mesh, type ProxyProc } from './fixture.ts'

/**
 * What one ordinary request costs the client proxy beyond its bytes: work done for every
 * request that only a rare request needs. Measured in a real proxy process on a real mesh
 * (the counter is preloaded with `node --import`, see abort-counter.ts).
 */
const SERVICE = 'hello-cost'
const REQUESTS = 300
const mesh = new Mesh()
let client: ProxyProc
let counts: { path: string; remove: () => Promise<void> }

before(async () => {
  await mesh.start()
  const hello = await mesh.hello('c1')
  await mesh.serviceProxy(SERVICE, hello.port)
  counts = await tempDir('mtc-abort-count-')
  const saved = { options: process.env.NODE_OPTIONS, dir: process.env.ABORT_COUNT_DIR }
  process.env.NODE_OPTIONS = `${saved.options ?? ''} --import=${join(import.meta.dirname, 'abort-counter.ts')}`
  process.env.ABORT_COUNT_DIR = counts.path
  try {
    client = await mesh.proxy([String(await freePort())])
  } finally {
    if (saved.options == null) delete process.env.NODE_OPTIONS
    else process.env.NODE_OPTIONS = saved.options
    if (saved.dir == null) delete process.env.ABORT_COUNT_DIR
    else process.env.ABORT_COUNT_DIR = saved.dir
  }
  await mesh.routable(client.port, SERVICE)
})

after(async () => {
  await mesh.stop()
  await counts?.remove()
})

/** The client proxy's abort() calls so far (its file, written every 50 ms). */
async function aborts(): Promise<number> {
  await sleep(200)
  const pid = String(client.proc.child.pid)
  assert.ok((await readdir(counts.path)).includes(pid), 'the counter was not preloaded')
  return Number(await readFile(join(counts.path, pid), 'utf8'))
}

describe('proxy: the cost of an ordinary request', () => {
  it('aborts no AbortController (each abort builds a DOMException with a stack trace)', async () => {
    const before = await aborts()
    const started = performance.now()
    for (let i = 0; i < REQUESTS; i++) {
      const res = await http(client.port, `/${SERVICE}/bytes/64`)
      assert.equal(res.status, 200, res.body.toString())
    }
    const during = (await aborts()) - before
    // The mesh's own work (DHT queries, probes) aborts a few signals meanwhile: as many as
    // in as long a time without requests are not the requests' doing.
    await sleep(performance.now() - started)
    const background = (await aborts()) - before - during
    const perRequests = during - background
    assert.ok(
      perRequests < REQUESTS / 3,
      `${during} aborts for ${REQUESTS} requests (${background} in as long without requests)`,
    )
  })
})
