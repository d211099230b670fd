import assert from 'node:assert/strict'
import { createServer } from 'node:net'
import { describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { docker, run } from '@mtc/testkit'

/** The demo's gateway; it runs on fixed ports, as a user runs it. */
const GATEWAY = 'http://127.0.0.1:4200/hello-world-server/'
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
  it('`scripts/demo.sh --once` answers "Hello, world" from an instance started on demand, then cleans up, though a user curled before the service was registered', async () => {
    assert.deepEqual(await busyPorts(), [], 'the quickstart needs its fixed ports free')
    // Other test files may leave containers of their own: only new ones are the demo's.
    const before = new Set(await managed())
    const demo = run('bash', ['scripts/demo.sh', '--once'], { env: { MTC_SKIP_SETUP: '1' } })
    const timer = setTimeout(() => demo.child.kill('SIGKILL'), 240_000)
    // A user trying the service while step 5 still builds and registers it (issue 12
    // item 15): every answer before the registration is 404, and must not stick.
    const early: string[] = []
    try {
      for (let i = 0; i < 2_000 && demo.child.exitCode == null; i++) {
        if (demo.stdout().includes('\n6. ')) break
        const status = await fetch(GATEWAY, { signal: AbortSignal.timeout(20_000) })
          .then(async (r) => {
            await r.text()
            return String(r.status)
          })
          .catch(() => 'none')
        if (status !== 'none') early.push(status)
        await sleep(300)
      }
      const code = await demo.exited
      const stdout = demo.stdout()
      assert.equal(code, 0, `${stdout}\n${demo.stderr().slice(-4000)}`)
      assert.match(stdout, /-> 200 "Hello, world" in \d+ ms \(cold start\)/)
      const instance = /instance container: (mtc-hello-world-server-[0-9a-f]+)/.exec(stdout)?.[1]
      assert.ok(instance != null, stdout)
      assert.match(stdout, /stopped everything the demo started/)
      assert.ok(early.includes('404'), `answers before the registration: ${early.join(' ')}`)

      // What it says is true: no container of the demo is left, its ports are free again.
      const left = (await managed()).filter((id) => !before.has(id))
      assert.deepEqual(left, [], `containers left: ${left.join(' ')}`)
      const named = await docker(['ps', '-aq', '--filter', `name=^${instance}$`])
      assert.equal(named.stdout.trim(), '', `${instance} is left`)
      assert.deepEqual(await busyPorts(), [], 'ports still taken after the demo')
    } finally {
      clearTimeout(timer)
      await demo.stop()
    }
  })
})
