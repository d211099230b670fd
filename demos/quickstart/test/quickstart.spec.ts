import assert from 'node:assert/strict'
import { createServer } from 'node:net'
import { describe, it } from 'node:test'
import { docker, runToEnd } from '@mtc/testkit'

/** The quickstart's fixed ports: bootstrap, gateway, and the daemons' metrics. */
const PORTS = [4001, 4200, 9100, 9101, 9102, 9103]
const MANAGED = 'mtc.managed-by'

/** Whether nothing listens on 127.0.0.1:port (a bind succeeds). */
function free(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer()
    server.once('error', () => resolve(false))
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
  })
}

async function busyPorts(): Promise<number[]> {
  const busy: number[] = []
  for (const p of PORTS) if (!(await free(p))) busy.push(p)
  return busy
}

/** Managed containers on this Docker daemon, running or not. */
async function managed(): Promise<string[]> {
  const ps = await docker(['ps', '-aq', '--no-trunc', '--filter', `label=${MANAGED}`])
  return ps.stdout.split('\n').filter((id) => id !== '')
}

describe('quickstart demo', () => {
  it('`scripts/demo.sh --once` answers "Hello, world" from an instance started on demand, then cleans up', async () => {
    assert.deepEqual(await busyPorts(), [], 'the quickstart needs its fixed ports free')
    // Other test files may leave containers of their own: only new ones are the demo's.
    const before = new Set(await managed())
    const { code, stdout, stderr } = await runToEnd('bash', ['scripts/demo.sh', '--once'], {
      env: { MTC_SKIP_SETUP: '1' },
      timeoutMs: 240_000,
    })
    assert.equal(code, 0, `${stdout}\n${stderr.slice(-4000)}`)
    assert.match(stdout, /-> 200 "Hello, world" in \d+ ms \(cold start\)/)
    const instance = /instance container: (mtc-hello-world-server-[0-9a-f]+)/.exec(stdout)?.[1]
    assert.ok(instance != null, stdout)
    assert.match(stdout, /stopped everything the demo started/)

    // What it says is true: no container of the demo is left, its ports are free again.
    const left = (await managed()).filter((id) => !before.has(id))
    assert.deepEqual(left, [], `containers left: ${left.join(' ')}`)
    const named = await docker(['ps', '-aq', '--filter', `name=^${instance}$`])
    assert.equal(named.stdout.trim(), '', `${instance} is left`)
    assert.deepEqual(await busyPorts(), [], 'ports still taken after the demo')
  })
})
