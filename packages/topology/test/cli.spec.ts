import assert from 'node:assert/strict'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { runToEnd } from '@mtc/testkit'
import { listNetns } from '../src/index.ts'
import { missing } from './scenario-helpers.ts'

const PKG = join(import.meta.dirname, '..')
const CLI = join(PKG, 'src', 'cli.ts')
const EXAMPLE = join(PKG, 'examples', 'four-hosts-mesh.json')
/** Topology, dockerds and daemons up (~10 s here), one cold request, teardown. */
const CLI_TIMEOUT_MS = 120_000

describe('topology CLI', { skip: missing(), timeout: CLI_TIMEOUT_MS + 10_000 }, () => {
  it('runs a service across the hosts of a small file, and removes everything', async () => {
    const r = await runToEnd('node', [CLI, EXAMPLE, '--once'], { timeoutMs: CLI_TIMEOUT_MS })
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`)
    assert.match(r.stdout, /^client-far +configured +40 ms +measured +\d/m)
    // The cold request started the instance on the nearest allocator, which answered.
    assert.match(r.stdout, /GET \/hello-world-server\/ from client: 200 in \d+ ms, served on near/)
    const ns = /ip netns exec (mtc-t-\d+-\d+)-client/.exec(r.stdout)?.[1]
    assert.ok(ns != null, r.stdout)
    assert.deepEqual(
      listNetns().filter((n) => n.startsWith(ns)),
      [],
    )
  })

  it('refuses a missing file with a one-line error and exit 2', async () => {
    const r = await runToEnd('node', [CLI, join(PKG, 'no-such.json')], { timeoutMs: 10_000 })
    assert.equal(r.code, 2)
    assert.match(r.stderr, /^topology: cannot read .*no-such\.json: ENOENT/)
  })
})
