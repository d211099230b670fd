import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { Etcd3 } from 'etcd3'
import { createEtcdClient } from '../src/daemon/etcd-client.ts'
import { RecordStore } from '../src/daemon/etcd-store.ts'
import {
  ConflictError,
  InvalidNameError,
  InvalidRecordError,
  NotFoundError,
} from '../src/errors.ts'
import type { ServiceRecordInput } from '../src/records.ts'
import { type EtcdFixture, startEtcd } from './fixtures/etcd.ts'

const IMAGE_ID = `sha256:${'a'.repeat(64)}`

function input(name: string, overrides: Partial<ServiceRecordInput> = {}): ServiceRecordInput {
  return { name, image: `acme/${name}:1`, imageId: IMAGE_ID, ...overrides }
}

describe('RecordStore on a real etcd', () => {
  let etcd: EtcdFixture
  let client: Etcd3
  let testNumber = 0
  /** A store under its own prefix, so tests do not see each other's records. */
  let store: RecordStore

  before(async () => {
    etcd = await startEtcd()
    client = createEtcdClient(etcd.supervisor.endpoints)
  })
  after(async () => {
    client?.close()
    await etcd?.cleanup()
  })
  function freshStore(now?: () => Date): RecordStore {
    store = new RecordStore({ etcd: client }, { prefix: `/test/${++testNumber}/`, now })
    return store
  }

  it('puts and gets a record', async () => {
    const clock = new Date('2030-01-02T03:04:05.000Z')
    freshStore(() => clock)
    const perf = { softRttMs: 10, hardRttMs: 40 }
    const created = await store.put(input('web', { perf }))
    assert.ok(created.version > 0)
    assert.deepEqual(created, {
      ...input('web', { perf }),
      createdAt: clock.toISOString(),
      updatedAt: clock.toISOString(),
      version: created.version,
    })
    assert.deepEqual(await store.get('web'), created)
    const raw = await client.get('/test/1/web').json()
    assert.deepEqual(raw, {
      ...input('web', { perf }),
      createdAt: clock.toISOString(),
      updatedAt: clock.toISOString(),
    })
  })

  it('replaces a record, keeping createdAt and moving version on', async () => {
    let clock = new Date('2030-01-01T00:00:00.000Z')
    freshStore(() => clock)
    const first = await store.put(input('web'))
    clock = new Date('2030-06-01T00:00:00.000Z')
    const second = await store.put(input('web', { image: 'acme/web:2' }))
    assert.equal(second.image, 'acme/web:2')
    assert.equal(second.createdAt, first.createdAt)
    assert.equal(second.updatedAt, clock.toISOString())
    assert.ok(second.version > first.version)
    assert.deepEqual(await store.get('web'), second)
  })

  it('reports unknown services', async () => {
    freshStore()
    await assert.rejects(store.get('nope'), { name: 'NotFoundError', code: 'ERR_UNKNOWN_SERVICE' })
    await assert.rejects(store.delete('nope'), NotFoundError)
    await assert.rejects(store.delete('nope', { expectedVersion: 3 }), NotFoundError)
    await assert.rejects(store.put(input('nope'), { expectedVersion: 3 }), ConflictError)
  })

  it('validates before touching etcd', async () => {
    freshStore()
    await assert.rejects(
      store.put({ ...input('web'), perf: { softRttMs: -1 } }),
      InvalidRecordError,
    )
    await assert.rejects(store.get('Bad_Name'), InvalidNameError)
    await assert.rejects(store.put(input('web'), { expectedVersion: -1 }), InvalidRecordError)
    await assert.rejects(store.list({ prefix: 'a/b' }), InvalidNameError)
    await assert.rejects(store.list({ limit: 0 }), InvalidRecordError)
    await assert.rejects(store.list({ after: '..' }), InvalidNameError)
    assert.deepEqual(await store.list(), { records: [] })
  })

  it('deletes records', async () => {
    freshStore()
    const record = await store.put(input('web'))
    await store.delete('web')
    await assert.rejects(store.get('web'), NotFoundError)
    const again = await store.put(input('web'))
    await assert.rejects(store.delete('web', { expectedVersion: record.version }), ConflictError)
    await store.delete('web', { expectedVersion: again.version })
    await assert.rejects(store.get('web'), NotFoundError)
  })

  it('lists by name prefix, in pages', async () => {
    freshStore()
    const names = ['api-1', 'api-2', 'api-3', 'api-4', 'api-5', 'web-1', 'web-2', 'apis']
    for (const name of names) await store.put(input(name))

    const seen: string[] = []
    let after: string | undefined
    for (let page = 0; page < 10; page++) {
      const result = await store.list({ prefix: 'api-', limit: 2, after })
      assert.ok(result.records.length <= 2)
      seen.push(...result.records.map((r) => r.name))
      after = result.next
      if (after === undefined) break
    }
    assert.equal(after, undefined)
    assert.deepEqual(seen, ['api-1', 'api-2', 'api-3', 'api-4', 'api-5'])

    const all = await store.list()
    assert.deepEqual(
      all.records.map((r) => r.name),
      [...names].sort(),
    )
    assert.equal(all.next, undefined)
    assert.deepEqual(all.records[0], await store.get('api-1'))

    const tail = await store.list({ after: 'api-5', limit: 2 })
    assert.deepEqual(
      tail.records.map((r) => r.name),
      ['apis', 'web-1'],
    )
    assert.equal(tail.next, 'web-1')
    assert.deepEqual(await store.list({ prefix: 'web-', after: 'api-9' }), {
      records: [await store.get('web-1'), await store.get('web-2')],
    })
    assert.deepEqual(await store.list({ prefix: 'zzz' }), { records: [] })
  })

  it('creates only once with expectedVersion 0', async () => {
    freshStore()
    await store.put(input('web'), { expectedVersion: 0 })
    await assert.rejects(store.put(input('web'), { expectedVersion: 0 }), {
      name: 'ConflictError',
      code: 'ERR_VERSION_CONFLICT',
      message: /already exists/,
    })
  })

  it('lets exactly one of several concurrent writers of the same version win', async () => {
    freshStore()
    for (let round = 0; round < 5; round++) {
      const { version } = await store.put(input('web'))
      const results = await Promise.allSettled(
        Array.from({ length: 4 }, (_, writer) =>
          store.put(input('web', { image: `acme/web:${round}-${writer}` }), {
            expectedVersion: version,
          }),
        ),
      )
      const won = results.filter((r) => r.status === 'fulfilled')
      const lost = results.filter((r) => r.status === 'rejected')
      assert.equal(won.length, 1, `round ${round}`)
      for (const r of lost) assert.ok(r.reason instanceof ConflictError, String(r.reason))
      assert.deepEqual(await store.get('web'), won[0]!.value)
    }
  })

  it('lets exactly one concurrent creator win', async () => {
    freshStore()
    const results = await Promise.allSettled(
      Array.from({ length: 4 }, (_, i) =>
        store.put(input('web', { image: `acme/web:${i}` }), { expectedVersion: 0 }),
      ),
    )
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1)
  })

  it('applies concurrent unconditional writes atomically, one after another', async () => {
    freshStore()
    const written = await Promise.all(
      Array.from({ length: 5 }, (_, i) => store.put(input('web', { image: `acme/web:${i}` }))),
    )
    const versions = written.map((r) => r.version)
    assert.equal(new Set(versions).size, versions.length)
    const last = written.find((r) => r.version === Math.max(...versions))!
    assert.deepEqual(await store.get('web'), last)
  })

  it('keeps earlier versions and rolls back to one as a new version', async () => {
    freshStore()
    const idOf = (c: string) => `sha256:${c.repeat(64)}`
    const blob = { digest: `sha256:${'d'.repeat(64)}`, size: 10 }
    const v1 = await store.put(input('web', { imageId: idOf('1'), blob, healthPath: '/healthz' }))
    const v2 = await store.put(input('web', { image: 'acme/web:2', imageId: idOf('2') }))
    const v2b = await store.put(input('web', { image: 'acme/web:2', imageId: idOf('2') }))
    assert.deepEqual(
      (await store.history('web')).map((r) => r.version),
      [v2b.version, v2.version, v1.version],
    )
    assert.deepEqual(await store.historyBlobs(), new Set([blob.digest]))
    // Default target: the newest earlier version with another image (v1, not v2).
    const back = await store.rollback('web')
    assert.ok(back.version > v2b.version)
    assert.equal(back.imageId, idOf('1'))
    assert.deepEqual(back.blob, blob)
    assert.equal(back.healthPath, '/healthz')
    assert.deepEqual(await store.get('web'), back)
    // --to: any kept version; the current one or an unknown one is refused.
    const forward = await store.rollback('web', v2.version)
    assert.equal(forward.imageId, idOf('2'))
    await assert.rejects(store.rollback('web', forward.version), InvalidRecordError)
    await assert.rejects(store.rollback('web', 1), NotFoundError)
    await assert.rejects(store.rollback('nope'), NotFoundError)
  })

  it('keeps at most RECORD_HISTORY_LENGTH earlier versions and forgets them on delete', async () => {
    freshStore()
    for (let i = 0; i < 15; i++) await store.put(input('web', { image: `acme/web:${i}` }))
    const history = await store.history('web')
    assert.equal(history.length, 11)
    assert.equal(history[0]!.image, 'acme/web:14')
    assert.equal(history[10]!.image, 'acme/web:4')
    await store.delete('web')
    await store.put(input('web'))
    assert.equal((await store.history('web')).length, 1)
    // Only records: the history keys are outside the records' prefix.
    assert.equal((await store.list()).records.length, 1)
  })

  it('refuses malformed health settings', async () => {
    freshStore()
    for (const bad of [
      { healthPath: 'healthz' },
      { healthPath: '/a b' },
      { healthPath: `/${'x'.repeat(300)}` },
      { healthPath: '/h', healthIntervalMs: 5 },
      { healthPath: '/h', healthThreshold: 0 },
      { healthPath: '/h', healthThreshold: 1.5 },
      { healthIntervalMs: 1000 },
    ]) {
      await assert.rejects(store.put(input('web', bad)), InvalidRecordError, JSON.stringify(bad))
    }
    const ok = await store.put(
      input('web', { healthPath: '/healthz?deep=1', healthIntervalMs: 500, healthThreshold: 2 }),
    )
    assert.equal((await store.get('web')).healthThreshold, ok.healthThreshold)
  })
})
