import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { run } from '@mtc/testkit'

/** The demo's gateway; it runs on fixed ports, as a user runs it. */
const GATEWAY = 'http://127.0.0.1:4200/hello-world-server/'

describe('quickstart demo', () => {
  it('`scripts/demo.sh --once` answers "Hello, world" from an instance started on demand, then cleans up, though a user curled before the service was registered', async () => {
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
      assert.match(stdout, /instance container: mtc-hello-world-server-/)
      assert.match(stdout, /stopped everything the demo started/)
      assert.ok(early.includes('404'), `answers before the registration: ${early.join(' ')}`)
    } finally {
      clearTimeout(timer)
      await demo.stop()
    }
  })
})
