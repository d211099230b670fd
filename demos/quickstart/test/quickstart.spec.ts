import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { runToEnd } from '@mtc/testkit'

describe('quickstart demo', () => {
  it('`scripts/demo.sh --once` answers "Hello, world" from an instance started on demand, then cleans up', async () => {
    const { code, stdout, stderr } = await runToEnd('bash', ['scripts/demo.sh', '--once'], {
      env: { MTC_SKIP_SETUP: '1' },
      timeoutMs: 240_000,
    })
    assert.equal(code, 0, `${stdout}\n${stderr.slice(-4000)}`)
    assert.match(stdout, /-> 200 "Hello, world" in \d+ ms \(cold start\)/)
    assert.match(stdout, /instance container: mtc-hello-world-server-/)
    assert.match(stdout, /stopped everything the demo started/)
  })
})
