import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { runToEnd } from '@mtc/testkit'

/**
 * The scenario files skip where dockerd is missing, but in CI (`CI` set), where set-up
 * installs it, they fail loudly instead (issue 19.5). Run for real: cli.spec.ts in a child
 * whose PATH hides dockerd (/usr/sbin), with and without CI.
 */
const CLI_SPEC = fileURLToPath(new URL('cli.spec.ts', import.meta.url))
const WITHOUT_DOCKERD = '/usr/local/bin:/usr/bin:/bin'

async function runWithoutDockerd(env: NodeJS.ProcessEnv) {
  return await runToEnd(process.execPath, ['--test', '--test-reporter=tap', CLI_SPEC], {
    // Not a subtest of this run: a test file of its own.
    env: { PATH: WITHOUT_DOCKERD, NODE_TEST_CONTEXT: undefined, ...env },
    timeoutMs: 60_000,
  })
}

describe('a scenario file where dockerd is missing', { timeout: 130_000 }, () => {
  it('is skipped, saying why, outside CI', async () => {
    const r = await runWithoutDockerd({ CI: '' })
    assert.equal(r.code, 0, r.stdout + r.stderr)
    assert.match(r.stdout, /# SKIP needs dockerd/)
    assert.match(r.stdout, /^# fail 0$/m)
  })

  it('fails with the reason in CI', async () => {
    const r = await runWithoutDockerd({ CI: 'true' })
    assert.equal(r.code, 1, r.stdout + r.stderr)
    assert.match(r.stdout + r.stderr, /needs dockerd: required in CI/)
    assert.match(r.stdout, /# fail 1/)
  })
})
