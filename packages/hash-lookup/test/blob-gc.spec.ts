/**
 * The blob store's quota and the garbage collector's rules on a real directory, with a
 * record list the test controls (the end-to-end cases with etcd are in storage.spec.ts).
 */
import assert from 'node:assert/strict'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, it } from 'node:test'
import { BlobStore } from '@mtc/blobs'
import { tempDir } from '@mtc/testkit'
import { BlobCollector } from '../src/daemon/blob-gc.ts'
import type { ServiceRecord } from '../src/records.ts'
import { chunked } from './fixtures/tarballs.ts'

let dir: { path: string; remove: () => Promise<void> }

beforeEach(async () => {
  dir = await tempDir('mtc-blob-gc-')
})
afterEach(async () => {
  await dir.remove()
})

async function store(maxStorageBytes?: number): Promise<BlobStore> {
  const s = new BlobStore({ dataDir: dir.path, maxStorageBytes })
  await s.start()
  return s
}

const tmpFiles = () => readdir(join(dir.path, 'tmp'))

function bytes(n: number, fill: number): Buffer {
  return Buffer.alloc(n, fill)
}

/** A record list the test edits; `list` pages like RecordStore's. */
function recordsOf(digests: () => string[]) {
  return {
    list: async (options: { limit?: number; after?: string } = {}) => {
      const all = digests().map(
        (digest, i) => ({ name: `s${i}`, blob: { digest, size: 1 } }) as ServiceRecord,
      )
      const from = options.after != null ? all.findIndex((r) => r.name === options.after) + 1 : 0
      const page = all.slice(from, from + (options.limit ?? 100))
      const next = from + page.length < all.length ? page.at(-1)?.name : undefined
      return next != null ? { records: page, next } : { records: page }
    },
  }
}

const quiet = () => {}

describe('storage quota', () => {
  it('refuses an upload whose declared size does not fit, before reading a byte', async () => {
    const s = await store(1000)
    await s.write(chunked(bytes(600, 1)))
    let read = false
    async function* source() {
      read = true
      yield bytes(500, 2)
    }
    await assert.rejects(s.stage(source(), { declaredSize: 500 }), {
      code: 'ERR_QUOTA_EXCEEDED',
    })
    assert.equal(read, false)
    assert.deepEqual(await tmpFiles(), [])
    assert.equal(s.storedBytes, 600)
    assert.equal(s.reservedBytes, 0)
  })

  it('stops an upload without a declared size as soon as it exceeds the quota, removing the temp file', async () => {
    const s = await store(10_000)
    let sent = 0
    async function* source() {
      for (let i = 0; i < 100; i++) {
        sent += 1000
        yield bytes(1000, i)
      }
    }
    await assert.rejects(s.write(source()), { code: 'ERR_QUOTA_EXCEEDED' })
    assert.ok(sent <= 11_000, `read ${sent} bytes`)
    assert.deepEqual(await tmpFiles(), [])
    assert.deepEqual(await s.list(), [])
    assert.equal(s.reservedBytes, 0)
  })

  it('counts uploads in progress, frees discarded ones, and counts a stored digest once', async () => {
    const s = await store(1500)
    const staged = await s.stage(chunked(bytes(700, 3)), { declaredSize: 700 })
    assert.equal(s.reservedBytes, 700)
    await assert.rejects(s.stage(chunked(bytes(900, 4)), { declaredSize: 900 }), {
      name: 'QuotaExceededError',
    })
    await staged.discard()
    assert.equal(s.reservedBytes, 0)
    await s.write(chunked(bytes(700, 3)))
    // The same content again: it needs room while uploaded, but is stored once.
    await s.write(chunked(bytes(700, 3)))
    assert.equal(s.storedBytes, 700)
    // Sizes are read back at start.
    assert.equal((await store(1500)).storedBytes, 700)
  })
})

describe('garbage collection', () => {
  it('deletes exactly the blobs no record references', async () => {
    const s = await store()
    const a = await s.write(chunked(bytes(100, 1)))
    const b = await s.write(chunked(bytes(200, 2)))
    let referenced = [a.digest, a.digest]
    const collected: string[] = []
    const gc = new BlobCollector({
      blobs: s,
      records: recordsOf(() => referenced),
      log: quiet,
      onCollected: (d) => collected.push(d),
    })
    assert.deepEqual(await gc.sweep(), { collected: [b.digest], bytes: 200 })
    assert.deepEqual(await s.list(), [a.digest])
    assert.equal(s.storedBytes, 100)
    referenced = []
    await gc.sweep()
    assert.deepEqual(await s.list(), [])
    assert.deepEqual(collected, [b.digest, a.digest])
  })

  it('keeps the blobs of earlier versions (a rollback needs them)', async () => {
    const s = await store()
    const current = await s.write(chunked(bytes(10, 3)))
    const earlier = await s.write(chunked(bytes(20, 4)))
    const gone = await s.write(chunked(bytes(30, 5)))
    const gc = new BlobCollector({
      blobs: s,
      records: {
        ...recordsOf(() => [current.digest]),
        historyBlobs: async () => new Set([earlier.digest]),
      },
      log: quiet,
    })
    assert.deepEqual((await gc.sweep()).collected, [gone.digest])
    assert.deepEqual((await s.list()).sort(), [current.digest, earlier.digest].sort())
  })

  it('reads every page of records before deleting', async () => {
    const s = await store()
    const kept = await s.write(chunked(bytes(10, 9)))
    // The referencing record is on the third page (pages of 1000).
    const digests = [...Array(2500).fill(`sha256:${'0'.repeat(64)}`), kept.digest]
    const gc = new BlobCollector({ blobs: s, records: recordsOf(() => digests), log: quiet })
    assert.deepEqual((await gc.sweep()).collected, [])
    assert.deepEqual(await s.list(), [kept.digest])
  })

  it('deletes nothing when the records cannot be read', async () => {
    const s = await store()
    await s.write(chunked(bytes(10, 1)))
    const gc = new BlobCollector({
      blobs: s,
      records: {
        list: async () => {
          throw new Error('etcd down')
        },
      },
      log: quiet,
    })
    await assert.rejects(gc.sweep(), /etcd down/)
    assert.equal((await s.list()).length, 1)
  })

  it('keeps a blob committed under a lease until the lease is released', async () => {
    const s = await store()
    const gc = new BlobCollector({ blobs: s, records: recordsOf(() => []), log: quiet })
    const lease = s.lease()
    const blob = await s.write(chunked(bytes(50, 5)), { lease })
    // Committed, record not written yet: not garbage.
    assert.deepEqual((await gc.sweep()).collected, [])
    assert.deepEqual(await s.list(), [blob.digest])
    lease.release()
    assert.deepEqual((await gc.sweep()).collected, [blob.digest])
  })

  it('never deletes a blob leased while the sweep ran, even if released before it decides', async () => {
    const s = await store()
    let written: string[] = []
    // The sweep reads the records before the upload's record exists...
    let upload: Promise<void> = Promise.resolve()
    const records = {
      list: async () => {
        const page = { records: written.map((digest) => ({ blob: { digest } }) as ServiceRecord) }
        // ...and while it waits, the upload commits, writes its record and releases its lease.
        upload = (async () => {
          const lease = s.lease()
          const blob = await s.write(chunked(bytes(70, 7)), { lease })
          written = [blob.digest]
          lease.release()
        })()
        await upload
        return page
      },
    }
    await s.write(chunked(bytes(10, 1))) // something to sweep, so the records are read
    const gc = new BlobCollector({ blobs: s, records, log: quiet })
    const result = await gc.sweep()
    await upload
    assert.equal(result.collected.length, 1) // the old unreferenced blob only
    assert.deepEqual(await s.list(), written)
  })

  it('coalesces requests: one sweep at a time, one more after it', async () => {
    const s = await store()
    await s.write(chunked(bytes(10, 1)))
    let lists = 0
    let release!: () => void
    const gate = new Promise<void>((r) => {
      release = r
    })
    const gc = new BlobCollector({
      blobs: s,
      records: {
        list: async () => {
          lists++
          await gate
          return { records: [] }
        },
      },
      log: quiet,
    })
    const requests = [gc.request(), gc.request(), gc.request()]
    release()
    await Promise.all(requests)
    assert.equal(lists, 1) // the store was empty after the first sweep: the second lists nothing
    assert.deepEqual(await s.list(), [])
    await gc.stop()
  })
})
