import assert from 'node:assert/strict'
import { afterEach, beforeEach, describe, it } from 'node:test'
import type { Etcd3 } from 'etcd3'
import { createEtcdClient } from '../src/daemon/etcd-client.ts'
import { RecordStore } from '../src/daemon/etcd-store.ts'
import { EtcdSupervisor } from '../src/daemon/etcd-supervisor.ts'
import { RegistryUnavailableError } from '../src/errors.ts'
import { type EtcdFixture, eventually, startEtcd } from './fixtures/etcd.ts'

const record = { name: 'web', image: 'acme/web:1', imageId: `sha256:${'a'.repeat(64)}` }
/** The brief's bound on failing while etcd is down; the store's own deadline is 2 s. */
const FAIL_WITHIN_MS = 5_000

/** Runs `operation`, expecting RegistryUnavailableError within FAIL_WITHIN_MS. */
async function failsFast(what: string, operation: () => Promise<unknown>): Promise<void> {
  const started = Date.now()
  await assert.rejects(operation(), (err) => {
    assert.ok(err instanceof RegistryUnavailableError, `${what}: ${err}`)
    assert.equal(err.code, 'ERR_REGISTRY_UNAVAILABLE')
    return true
  })
  const elapsed = Date.now() - started
  assert.ok(elapsed < FAIL_WITHIN_MS, `${what} took ${elapsed} ms`)
}

describe('RecordStore while etcd is unavailable', () => {
  let etcd: EtcdFixture
  let client: Etcd3 | undefined
  let frozenPid: number | undefined

  beforeEach(async () => {
    etcd = await startEtcd()
  })
  afterEach(async () => {
    if (frozenPid !== undefined) process.kill(frozenPid, 'SIGCONT')
    frozenPid = undefined
    client?.close()
    await etcd.cleanup()
  })

  it('fails fast while etcd is down and recovers on the same data directory', async () => {
    client = createEtcdClient(etcd.supervisor.endpoints)
    const store = new RecordStore({ etcd: client })
    const stored = await store.put(record)

    await etcd.supervisor.stop()
    await failsFast('get', () => store.get('web'))
    await failsFast('put', () => store.put(record))
    await failsFast('list', () => store.list())
    await failsFast('delete', () => store.delete('web'))

    etcd.supervisor = new EtcdSupervisor(etcd.init)
    await etcd.supervisor.start()
    assert.deepEqual(await eventually(() => store.get('web'), 10_000), stored)
    const updated = await store.put(record, { expectedVersion: stored.version })
    assert.ok(updated.version > stored.version)
  })

  it('fails fast when etcd hangs', async () => {
    client = createEtcdClient(etcd.supervisor.endpoints)
    const store = new RecordStore({ etcd: client })
    const stored = await store.put(record)

    frozenPid = etcd.supervisor.pid!
    process.kill(frozenPid, 'SIGSTOP') // accepts connections, answers nothing
    await failsFast('get', () => store.get('web'))
    await failsFast('put', () => store.put(record))

    process.kill(frozenPid, 'SIGCONT')
    frozenPid = undefined
    const current = await eventually(() => store.get('web'), 10_000)
    assert.equal(current.name, 'web')
    assert.ok(current.version >= stored.version)
  })
})
