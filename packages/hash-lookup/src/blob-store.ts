/**
 * Content-addressed blob storage on local disk: `<dataDir>/blobs/sha256/<hex>`.
 *
 * Uploads are streamed into `<dataDir>/tmp/` while hashed and counted, fsynced, and only then
 * renamed into place (same filesystem, so the rename is atomic), so a blob path always holds
 * complete, verified bytes. Writing is two-phase (`stage`, then `commit` or `discard`) so a
 * caller can check the content, e.g. the tarball's image, before it becomes visible.
 * One process owns a data directory: `start()` deletes whatever is left in `tmp/`.
 */

import { createHash, randomUUID } from 'node:crypto'
import { createWriteStream, type ReadStream } from 'node:fs'
import { mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { DEFAULT_MAX_BLOB_BYTES } from './constants.ts'
import { BlobNotFoundError, BlobTooLargeError, DigestMismatchError } from './errors.ts'
import { assertDigest } from './names.ts'

export interface BlobStoreInit {
  dataDir: string
}

export interface StoredBlob {
  /** `sha256:<hex>` */
  digest: string
  size: number
  path: string
}

export interface BlobWriteOptions {
  /** Size limit; BlobTooLargeError as soon as it is exceeded. Default `DEFAULT_MAX_BLOB_BYTES`. */
  maxSize?: number
  /** Digest the writer announced; DigestMismatchError if the bytes hash to another. */
  expectedDigest?: string
  signal?: AbortSignal
}

/** A fully written, fsynced temporary file awaiting `commit()` or `discard()`. */
export interface StagedBlob {
  readonly digest: string
  readonly size: number
  /** Moves the blob into place; the temporary file is gone afterwards either way. */
  commit(): Promise<StoredBlob>
  discard(): Promise<void>
}

const HEX = /^[0-9a-f]{64}$/

export class BlobStore {
  readonly #blobDir: string
  readonly #tmpDir: string

  constructor(init: BlobStoreInit) {
    this.#blobDir = join(init.dataDir, 'blobs', 'sha256')
    this.#tmpDir = join(init.dataDir, 'tmp')
  }

  /** Creates the directories and removes temporary files a previous run left behind. */
  async start(): Promise<void> {
    await mkdir(this.#blobDir, { recursive: true })
    await mkdir(this.#tmpDir, { recursive: true })
    await this.removeStaleTempFiles()
  }

  /** Deletes everything in `tmp/`; returns how many files it removed. */
  async removeStaleTempFiles(): Promise<number> {
    const names = await readdir(this.#tmpDir)
    await Promise.all(
      names.map((name) => rm(join(this.#tmpDir, name), { force: true, recursive: true })),
    )
    return names.length
  }

  /** Stages, then commits. */
  async write(
    source: AsyncIterable<Uint8Array>,
    options: BlobWriteOptions = {},
  ): Promise<StoredBlob> {
    const staged = await this.stage(source, options)
    return staged.commit()
  }

  /** Streams `source` into a temporary file; on any failure the file is removed. */
  async stage(
    source: AsyncIterable<Uint8Array>,
    options: BlobWriteOptions = {},
  ): Promise<StagedBlob> {
    const maxSize = options.maxSize ?? DEFAULT_MAX_BLOB_BYTES
    const expectedDigest =
      options.expectedDigest === undefined ? undefined : assertDigest(options.expectedDigest)
    const tmpPath = join(this.#tmpDir, `${randomUUID()}.part`)
    const hash = createHash('sha256')
    let size = 0
    try {
      await pipeline(
        source,
        async function* meter(chunks: AsyncIterable<Uint8Array>) {
          for await (const chunk of chunks) {
            size += chunk.byteLength
            if (size > maxSize) throw new BlobTooLargeError(`Blob exceeds ${maxSize} bytes`)
            hash.update(chunk)
            yield chunk
          }
        },
        // flush: fsync before close, and pipeline resolves only after close
        createWriteStream(tmpPath, { flags: 'wx', flush: true }),
        { signal: options.signal },
      )
    } catch (err) {
      await rm(tmpPath, { force: true })
      // pipeline reports an abort as a generic AbortError; the reason says why.
      throw options.signal?.aborted ? options.signal.reason : err
    }

    const digest = `sha256:${hash.digest('hex')}`
    if (expectedDigest !== undefined && digest !== expectedDigest) {
      await rm(tmpPath, { force: true })
      throw new DigestMismatchError(`Blob hashes to ${digest}, not ${expectedDigest}`)
    }
    return this.#staged(tmpPath, digest, size)
  }

  async has(digest: string): Promise<boolean> {
    try {
      await this.stat(digest)
      return true
    } catch (err) {
      if (err instanceof BlobNotFoundError) return false
      throw err
    }
  }

  async stat(digest: string): Promise<StoredBlob> {
    const path = this.#path(digest)
    try {
      return { digest, size: (await stat(path)).size, path }
    } catch (err) {
      throw notFoundOr(err, digest)
    }
  }

  async createReadStream(digest: string): Promise<ReadStream> {
    const path = this.#path(digest)
    try {
      return (await open(path, 'r')).createReadStream()
    } catch (err) {
      throw notFoundOr(err, digest)
    }
  }

  /** Removes a blob; false if it was not there. */
  async delete(digest: string): Promise<boolean> {
    try {
      await unlink(this.#path(digest))
      return true
    } catch (err) {
      if (isNotFound(err)) return false
      throw err
    }
  }

  /** Digests of all stored blobs, sorted. */
  async list(): Promise<string[]> {
    const names = await readdir(this.#blobDir)
    return names
      .filter((name) => HEX.test(name))
      .sort()
      .map((hex) => `sha256:${hex}`)
  }

  #path(digest: string): string {
    return join(this.#blobDir, assertDigest(digest).slice('sha256:'.length))
  }

  #staged(tmpPath: string, digest: string, size: number): StagedBlob {
    let settled = false
    return {
      digest,
      size,
      commit: async () => {
        if (settled) throw new Error('Staged blob already committed or discarded')
        settled = true
        const path = this.#path(digest)
        try {
          await rename(tmpPath, path)
        } catch (err) {
          await rm(tmpPath, { force: true })
          throw err
        }
        await syncDirectory(this.#blobDir) // makes the rename itself durable
        return { digest, size, path }
      },
      discard: async () => {
        if (settled) return
        settled = true
        await rm(tmpPath, { force: true })
      },
    }
  }
}

async function syncDirectory(path: string): Promise<void> {
  const dir = await open(path, 'r')
  try {
    await dir.sync()
  } finally {
    await dir.close()
  }
}

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === 'ENOENT'
}

function notFoundOr(err: unknown, digest: string): unknown {
  return isNotFound(err) ? new BlobNotFoundError(`Unknown blob ${digest}`, { cause: err }) : err
}
