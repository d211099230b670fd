import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { freePort } from '@mtc/testkit'
import { createEtcdClient } from '../src/daemon/etcd-client.ts'
import { RecordStore } from '../src/daemon/etcd-store.ts'
import { EtcdSupervisor } from '../src/daemon/etcd-supervisor.ts'
import { EtcdStartError } from '../src/errors.ts'
import { type EtcdFixture, eventually, startEtcd } from './fixtures/etcd.ts'

const record = { name: 'web', image: 'acme/web:1', imageId: `sha256:${'a'.repeat(64)}` }

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

describe('EtcdSupervisor', () => {
  const cleanups: (() => Promise<void> | void)[] = []
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
  })
  async function etcd(overrides = {}): Promise<EtcdFixture> {
    const fixture = await startEtcd(overrides)
    cleanups.push(() => fixture.cleanup())
    return fixture
  }

  it('starts etcd, answering on the given client port only', async () => {
    const { supervisor, init } = await etcd()
    assert.deepEqual(supervisor.endpoints, [`http://127.0.0.1:${init.clientPort}`])
    assert.equal(await supervisor.healthy(), true)
    assert.ok(supervisor.pid !== undefined && isRunning(supervisor.pid))
  })

  it('restarts etcd killed with SIGKILL, keeping its data', async () => {
    const fixture = await etcd()
    const client = createEtcdClient(fixture.supervisor.endpoints)
    cleanups.push(() => client.close())
    const store = new RecordStore({ etcd: client })
    const stored = await store.put(record)

    const killed = fixture.supervisor.pid!
    process.kill(killed, 'SIGKILL')
    await eventually(async () => {
      assert.notEqual(fixture.supervisor.pid, killed)
      assert.equal(await fixture.supervisor.healthy(), true)
    }, 15_000)
    assert.equal(isRunning(killed), false)
    assert.equal(fixture.supervisor.restarts, 1)
    assert.deepEqual(await eventually(() => store.get('web'), 5_000), stored)
  })

  it('stops etcd, once, however often stop() is called', async () => {
    const { supervisor } = await etcd()
    const pid = supervisor.pid!
    await Promise.all([supervisor.stop(), supervisor.stop()])
    await supervisor.stop()
    assert.equal(isRunning(pid), false)
    await sleep(300) // longer than the restart backoff: a stopped etcd must stay down
    assert.equal(await supervisor.healthy(), false)
    assert.equal(supervisor.restarts, 0)
  })

  it('kills an etcd that ignores SIGTERM after the stop timeout', async () => {
    const { supervisor } = await etcd({ stopTimeoutMs: 500 })
    const pid = supervisor.pid!
    process.kill(pid, 'SIGSTOP') // a stopped process cannot act on SIGTERM
    cleanups.push(() => {
      if (isRunning(pid)) process.kill(pid, 'SIGCONT')
    })
    const started = Date.now()
    await supervisor.stop()
    assert.ok(Date.now() - started < 3_000)
    assert.equal(isRunning(pid), false)
  })

  async function tempDir(): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'hl-etcd-'))
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    return dir
  }

  it('fails to start when etcd cannot bind its client port', async () => {
    const busy = createServer((socket) => socket.destroy()) // so close() need not wait for probes
    const port = await freePort()
    await new Promise<void>((resolve) => busy.listen(port, '127.0.0.1', resolve))
    cleanups.push(() => new Promise<void>((resolve) => busy.close(() => resolve())))
    const supervisor = new EtcdSupervisor({
      dataDir: await tempDir(),
      clientPort: port,
      peerPort: await freePort(),
    })
    cleanups.push(() => supervisor.stop())
    const started = Date.now()
    await assert.rejects(supervisor.start(), (err) => {
      assert.ok(err instanceof EtcdStartError, String(err))
      assert.equal(err.code, 'ERR_ETCD_START_FAILED')
      assert.match(err.message, /exited with code/)
      return true
    })
    assert.ok(Date.now() - started < 10_000)
    assert.equal(supervisor.pid, undefined)
  })

  it('fails to start when there is no etcd binary', async () => {
    const supervisor = new EtcdSupervisor({
      dataDir: await tempDir(),
      binary: '/nonexistent/etcd',
      clientPort: await freePort(),
      peerPort: await freePort(),
    })
    await assert.rejects(supervisor.start(), { name: 'EtcdStartError', message: /failed to run/ })
    await supervisor.stop()
  })
})
