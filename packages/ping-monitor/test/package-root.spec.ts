import assert from 'node:assert/strict'
import { describe, it } from 'node:test'

/** Package roots are library surfaces (issue #16): the daemon is reached through ./daemon. */
describe('@mtc/ping-monitor', () => {
  it('exports no main from its root; the daemon is @mtc/ping-monitor/daemon', async () => {
    const root = await import('@mtc/ping-monitor')
    assert.equal('main' in root, false)
    assert.equal(typeof root.PingMonitor, 'function')
    const daemon = await import('@mtc/ping-monitor/daemon')
    assert.equal(typeof daemon.main, 'function')
  })
})
