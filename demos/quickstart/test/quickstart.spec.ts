import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { runToEnd } from '@mtc/testkit'

describe('quickstart demo', () => {
  it('`scripts/demo.sh --once` shows both peers with an RTT and stops everything', async () => {
    const { code, stdout, stderr } = await runToEnd('bash', ['scripts/demo.sh', '--once'], {
      env: { MTC_SKIP_SETUP: '1' },
      timeoutMs: 60_000,
    })
    assert.equal(code, 0, `${stdout}\n${stderr}`)
    const rows = stdout.split('\n').filter((l) => /12D3Koo\S+\s+ping-monitor\s+\d+\.\d+ ms/.test(l))
    assert.equal(rows.length, 2, stdout)
    assert.match(stdout, /stopped everything the demo started/)
  })
})
