import assert from 'node:assert/strict'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, it } from 'node:test'
import { BlobStore } from '@mtc/blobs'
import { ingestImageTarball } from '../src/daemon/ingest.ts'
import {
  BlobTooLargeError,
  ImageMismatchError,
  InvalidReferenceError,
  InvalidTarballError,
} from '../src/errors.ts'
import { chunked, classicTarball, fakeImage, ociTarball, sha256 } from './fixtures/tarballs.ts'

describe('ingestImageTarball', () => {
  let dataDir: string
  let store: BlobStore
  const alpine = fakeImage('alpine', 200_000)

  beforeEach(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'hl-ingest-'))
    store = new BlobStore({ dataDir })
    await store.start()
  })
  afterEach(async () => {
    await rm(dataDir, { recursive: true, force: true })
  })

  async function leftovers(): Promise<string[]> {
    return [
      ...(await readdir(join(dataDir, 'tmp'))),
      ...(await readdir(join(dataDir, 'blobs', 'sha256'))),
    ]
  }

  /** Yields the tarball in chunks and counts how often each byte was handed out. */
  function counted(bytes: Buffer) {
    const source = { bytesRead: 0 }
    async function* read() {
      for await (const chunk of chunked(bytes, 8192)) {
        source.bytesRead += chunk.length
        yield chunk
      }
    }
    return Object.assign(source, { stream: read() })
  }

  it('stores a tarball holding the named image, reading the upload once', async () => {
    const tarball = await ociTarball(alpine, { name: 'docker.io/library/alpine:3.20' })
    const upload = counted(tarball)
    const result = await ingestImageTarball(store, upload.stream, { reference: 'alpine:3.20' })
    assert.equal(upload.bytesRead, tarball.length)
    assert.equal(result.image.imageId, alpine.imageId)
    assert.equal(result.blob.digest, `sha256:${sha256(tarball)}`)
    assert.equal(result.blob.size, tarball.length)
    assert.deepEqual(await readFile(result.blob.path), tarball)
    assert.deepEqual(await readdir(join(dataDir, 'tmp')), [])
  })

  it('rejects a tarball of another image and stores nothing', async () => {
    const tarball = await classicTarball([{ image: alpine, repoTags: ['alpine:3.20'] }])
    await assert.rejects(
      ingestImageTarball(store, chunked(tarball), { reference: 'alpine:3.19' }),
      ImageMismatchError,
    )
    assert.deepEqual(await leftovers(), [])
  })

  it('rejects a tampered tarball and stores nothing', async () => {
    const tarball = await classicTarball([{ image: alpine, repoTags: ['alpine:3.20'] }], {
      tamperConfig: true,
    })
    await assert.rejects(
      ingestImageTarball(store, chunked(tarball), { reference: 'alpine:3.20' }),
      InvalidTarballError,
    )
    assert.deepEqual(await leftovers(), [])
  })

  it('stops reading garbage as soon as the parser gives up', async () => {
    const upload = counted(Buffer.alloc(1_000_000, 0x41))
    await assert.rejects(
      ingestImageTarball(store, upload.stream, { reference: 'alpine' }),
      InvalidTarballError,
    )
    assert.ok(upload.bytesRead < 100_000, `read ${upload.bytesRead} bytes`)
    assert.deepEqual(await leftovers(), [])
  })

  it('rejects an oversize tarball and stores nothing', async () => {
    const tarball = await classicTarball([{ image: alpine, repoTags: ['alpine:3.20'] }])
    await assert.rejects(
      ingestImageTarball(store, chunked(tarball), { reference: 'alpine:3.20', maxSize: 50_000 }),
      BlobTooLargeError,
    )
    assert.deepEqual(await leftovers(), [])
  })

  it('stores nothing when the upload fails mid-way', async () => {
    const tarball = await classicTarball([{ image: alpine, repoTags: ['alpine:3.20'] }])
    async function* failing() {
      yield tarball.subarray(0, 100_000)
      throw new Error('stream reset')
    }
    await assert.rejects(ingestImageTarball(store, failing(), { reference: 'alpine:3.20' }), {
      message: 'stream reset',
    })
    assert.deepEqual(await leftovers(), [])
  })

  it('rejects a bad reference before reading', async () => {
    const upload = counted(Buffer.alloc(10))
    await assert.rejects(
      ingestImageTarball(store, upload.stream, { reference: 'Not/A/Ref' }),
      InvalidReferenceError,
    )
    assert.equal(upload.bytesRead, 0)
  })
})
