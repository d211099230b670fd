import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { text } from 'node:stream/consumers'
import { afterEach, beforeEach, describe, it } from 'node:test'
import {
  BlobNotFoundError,
  BlobTooLargeError,
  DigestMismatchError,
  InvalidDigestError,
} from '../src/errors.ts'
import { BlobStore } from '../src/store.ts'
import { chunked, sha256 } from './fixtures.ts'

describe('blob store', () => {
  let dataDir: string
  let store: BlobStore

  beforeEach(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'hl-blobs-'))
    store = new BlobStore({ dataDir })
    await store.start()
  })
  afterEach(async () => {
    await rm(dataDir, { recursive: true, force: true })
  })

  /** Files under tmp/ and blobs/sha256/. */
  async function files(): Promise<{ tmp: string[]; blobs: string[] }> {
    return {
      tmp: await readdir(join(dataDir, 'tmp')),
      blobs: await readdir(join(dataDir, 'blobs', 'sha256')),
    }
  }

  it('stores a stream under its sha256 and reads it back', async () => {
    const bytes = randomBytes(300_000)
    const blob = await store.write(Readable.from(chunked(bytes, 16_384)), { maxSize: bytes.length })
    const hex = sha256(bytes)
    assert.deepEqual(blob, {
      digest: `sha256:${hex}`,
      size: bytes.length,
      path: join(dataDir, 'blobs', 'sha256', hex),
    })
    assert.deepEqual(await readFile(blob.path), bytes)
    assert.deepEqual(await store.stat(blob.digest), blob)
    assert.equal(await store.has(blob.digest), true)
    const chunks: Buffer[] = []
    for await (const chunk of await store.createReadStream(blob.digest)) chunks.push(chunk)
    assert.deepEqual(Buffer.concat(chunks), bytes)
    assert.deepEqual(await store.list(), [blob.digest])
    assert.deepEqual(await files(), { tmp: [], blobs: [hex] })
  })

  it('stores the same content once', async () => {
    const first = await store.write(chunked(Buffer.from('same')))
    const second = await store.write(chunked(Buffer.from('same')))
    assert.deepEqual(second, first)
    assert.deepEqual(await store.list(), [first.digest])
  })

  it('accepts a blob of exactly maxSize', async () => {
    const blob = await store.write(chunked(Buffer.alloc(100)), { maxSize: 100 })
    assert.equal(blob.size, 100)
  })

  it('rejects an oversize stream as soon as it passes the limit and keeps nothing', async () => {
    let chunksRead = 0
    async function* endless() {
      for (let i = 0; i < 1000; i++) {
        chunksRead++
        yield Buffer.alloc(1000)
      }
    }
    await assert.rejects(store.write(endless(), { maxSize: 10_500 }), (err) => {
      assert.ok(err instanceof BlobTooLargeError)
      assert.equal(err.code, 'ERR_BLOB_TOO_LARGE')
      return true
    })
    assert.ok(chunksRead <= 12, `read ${chunksRead} chunks`)
    assert.deepEqual(await files(), { tmp: [], blobs: [] })
  })

  it('keeps nothing when the source fails mid-way', async () => {
    async function* failing() {
      yield randomBytes(50_000)
      yield randomBytes(50_000)
      throw new Error('peer reset the stream')
    }
    await assert.rejects(store.write(failing()), { message: 'peer reset the stream' })
    assert.deepEqual(await files(), { tmp: [], blobs: [] })
  })

  it('keeps nothing when a source stream is destroyed mid-way', async () => {
    const source = new Readable({ read() {} })
    source.push(randomBytes(10_000))
    setTimeout(() => source.destroy(new Error('aborted upload')), 20)
    await assert.rejects(store.write(source), { message: 'aborted upload' })
    assert.deepEqual(await files(), { tmp: [], blobs: [] })
  })

  it('keeps nothing when aborted through the signal', async () => {
    const controller = new AbortController()
    async function* slow() {
      yield Buffer.alloc(10)
      controller.abort(new Error('client went away'))
      yield Buffer.alloc(10)
    }
    await assert.rejects(store.write(slow(), { signal: controller.signal }), {
      message: 'client went away',
    })
    assert.deepEqual(await files(), { tmp: [], blobs: [] })
  })

  it('checks the digest the writer announced', async () => {
    const bytes = Buffer.from('hello')
    const expectedDigest = `sha256:${sha256(bytes)}`
    assert.equal((await store.write(chunked(bytes), { expectedDigest })).digest, expectedDigest)
    await assert.rejects(
      store.write(chunked(Buffer.from('hellO')), { expectedDigest }),
      DigestMismatchError,
    )
    assert.deepEqual(await store.list(), [expectedDigest])
    assert.deepEqual((await files()).tmp, [])
    await assert.rejects(
      store.write(chunked(bytes), { expectedDigest: 'md5:x' }),
      InvalidDigestError,
    )
  })

  it('leaves a staged blob invisible until committed, and removes it when discarded', async () => {
    const kept = await store.stage(chunked(Buffer.from('kept')))
    const dropped = await store.stage(chunked(Buffer.from('dropped')))
    assert.equal(await store.has(kept.digest), false)
    assert.equal((await files()).tmp.length, 2)
    await kept.commit()
    await dropped.discard()
    await dropped.discard()
    assert.deepEqual(await store.list(), [kept.digest])
    assert.deepEqual((await files()).tmp, [])
    await assert.rejects(kept.commit(), /already committed/)
  })

  it('reports unknown and malformed digests', async () => {
    const unknown = `sha256:${'0'.repeat(64)}`
    assert.equal(await store.has(unknown), false)
    await assert.rejects(store.stat(unknown), BlobNotFoundError)
    await assert.rejects(store.createReadStream(unknown), { code: 'ERR_UNKNOWN_BLOB' })
    assert.equal(await store.delete(unknown), false)
    await assert.rejects(store.stat('sha256:../../etc/passwd'), InvalidDigestError)
    await assert.rejects(store.delete(`sha256:${'A'.repeat(64)}`), InvalidDigestError)
  })

  it('deletes blobs', async () => {
    const blob = await store.write(chunked(Buffer.from('bye')))
    assert.equal(await store.delete(blob.digest), true)
    assert.equal(await store.has(blob.digest), false)
    assert.deepEqual(await store.list(), [])
  })

  it('removes stale temporary files on start, and ignores stray files in blobs/', async () => {
    const blob = await store.write(chunked(Buffer.from('survivor')))
    await writeFile(join(dataDir, 'tmp', 'crashed-upload.part'), 'half')
    await writeFile(join(dataDir, 'blobs', 'sha256', 'README'), 'not a blob')
    const restarted = new BlobStore({ dataDir })
    await restarted.start()
    assert.deepEqual((await files()).tmp, [])
    assert.deepEqual(await restarted.list(), [blob.digest])
    assert.equal(await text(await restarted.createReadStream(blob.digest)), 'survivor')
  })
})
