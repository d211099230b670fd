import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { createServer } from 'node:net'
import { describe, it } from 'node:test'
import { freePort, httpGet, LocalMesh, metricValue, stopAll } from '@mtc/testkit'

/**
 * The mesh launcher with real daemons on loopback: each start resolves once the daemon
 * serves (listening; hl-service's etcd up; a proxy's gateway answering), a daemon that
 * cannot start fails with its log, and stop ends them all, client first, bootstrap last,
 * however often it is called.
 */
describe('mesh launcher', { timeout: 180_000 }, () => {
  it('starts each daemon ready to serve, and stops them in reverse order, once', async (t) => {
    t.after(stopAll)
    const mesh = await LocalMesh.create({ prefix: 'mtc-launcher-test-' })
    t.after(() => mesh.stop())
    const boot = await mesh.startBootstrap()
    const hl = await mesh.startHlService()
    // Ready means etcd answers: no wait here before reading it.
    const text = (await httpGet(mesh.metricsUrl(hl))).body
    assert.equal(metricValue(text, 'mtc_hl_etcd_up'), 1)
    const gateway = await freePort()
    const proxy = await mesh.startProxy([String(gateway)])
    assert.ok((await httpGet(`http://127.0.0.1:${gateway}/`)).status > 0)
    assert.match(proxy.plan.args.join(' '), new RegExp(`--hl ${hl.addr}`))
    assert.match(proxy.plan.args.join(' '), new RegExp(`--bootstrap ${boot.addr}`))
    assert.ok(boot.peerId !== '' && boot.addr.endsWith(`/p2p/${boot.peerId}`))

    const ended: string[] = []
    for (const d of [boot, hl, proxy]) void d.proc?.exited.then(() => ended.push(d.plan.kind))
    await Promise.all([mesh.stop(), mesh.stop()])
    await mesh.stop()
    assert.deepEqual(ended, ['proxy', 'hl-service', 'bootstrap'])
    for (const d of [boot, hl, proxy]) assert.equal(d.running, false)
    assert.equal(existsSync(mesh.dir), false, 'the directory is removed')
  })

  it('a daemon that cannot start fails its start with its exit code and log', async (t) => {
    t.after(stopAll)
    const mesh = await LocalMesh.create({ prefix: 'mtc-launcher-test-' })
    t.after(() => mesh.stop())
    await mesh.startBootstrap()
    const t0 = performance.now()
    await assert.rejects(
      mesh.startProxy([String(await freePort())], ['--allocation-timeout', 'soon']),
      (err: Error) =>
        /proxy did not start: exited with 2/.test(err.message) &&
        /--allocation-timeout: "soon" is not a duration/.test(err.message),
    )
    // Not after the readiness timeout: as soon as it exited.
    assert.ok(performance.now() - t0 < 25_000)
  })

  it('a start that fails on a port taken meanwhile is tried again with fresh ports', async (t) => {
    t.after(stopAll)
    const mesh = await LocalMesh.create({ prefix: 'mtc-launcher-test-' })
    t.after(() => mesh.stop())
    // Another process holds the port the first attempt's metrics get (the last --metrics wins).
    const holder = createServer()
    await new Promise<void>((ok) => holder.listen(0, '127.0.0.1', ok))
    t.after(() => holder.close())
    const taken = (holder.address() as { port: number }).port
    let attempts = 0
    const boot = await mesh.start('bootstrap', async () =>
      attempts++ === 0 ? ['--metrics', `127.0.0.1:${taken}`] : [],
    )
    assert.equal(attempts, 2)
    assert.equal(boot.running, true)
    assert.notEqual(boot.metricsPort, taken)
  })

  it('a stopped daemon starts again with the same flags and identity', async (t) => {
    t.after(stopAll)
    const mesh = await LocalMesh.create({ prefix: 'mtc-launcher-test-' })
    t.after(() => mesh.stop())
    const boot = await mesh.startBootstrap(['--key-file', mesh.path('boot.key')])
    const first = boot.proc
    const addr = boot.addr
    await boot.stop()
    assert.equal(boot.running, false)
    await boot.start()
    assert.notEqual(boot.proc, first)
    assert.equal(boot.running, true)
    assert.equal(boot.peerId, addr.split('/p2p/')[1])
  })
})
