/**
 * Content-addressed blob storage on local disk: `<dataDir>/blobs/sha256/<hex>`.
 *
 * Uploads are streamed into `<dataDir>/tmp/` while hashed and counted, fsynced, and only then
 * renamed into place (same filesystem, so the rename is atomic), so a blob path always holds
 * complete, verified bytes. Writing is two-phase (`stage`, then `commit` or `discard`) so a
 * caller can check the content, e.g. the tarball's image, before it becomes visible.
 * One process owns a data directory: `start()` deletes whatever is left in `tmp/`.
 *
 * Space: a full disk is a StorageFullError (the temporary file is removed); with
 * `maxStorageBytes`, stored blobs plus uploads in progress never exceed it (an upload
 * reserves its declared size before its first byte, or grows its reservation as it is read)
 * and QuotaExceededError refuses the rest. Garbage collection (hl-service's blob-gc.ts) removes blobs no
 * record references through `sweep()`; a blob committed under a `lease` is never collected
 * before the lease is released, nor by a sweep that was running at any time it was held.
 */

import { createHash, randomUUID } from 'node:crypto'
import { createWriteStream, type ReadStream } from 'node:fs'
import { mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { DEFAULT_MAX_BLOB_BYTES } from './constants.ts'
import { assertDigest } from './digest.ts'
import {
  BlobNotFoundError,
  BlobTooLargeError,
  DigestMismatchError,
  QuotaExceededError,
  StorageFullError,
} from './errors.ts'

export interface BlobStoreInit {
  dataDir: string
  /** Cap on stored blob bytes plus uploads in progress (QuotaExceededError). Default: none. */
  maxStorageBytes?: number
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
  /** Size the writer announced: reserved against the quota before the first byte is read. */
  declaredSize?: number
  /** Digest the writer announced; DigestMismatchError if the bytes hash to another. */
  expectedDigest?: string
  /** Keeps the committed blob from garbage collection until the lease is released. */
  lease?: BlobLease
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

/** Blobs pinned against garbage collection, e.g. from commit until their record is written. */
export interface BlobLease {
  /** Pins `digest` (commit calls it before the blob becomes visible). */
  pin(digest: string): void
  /** Unpins every blob pinned under this lease; safe to call twice. */
  release(): void
}

/** One garbage collection pass; see `BlobStore.sweep()`. */
export interface BlobSweep {
  /** Deletes `digest` unless it was leased at any time since the sweep began; its size if deleted. */
  collect(digest: string): Promise<number | undefined>
  end(): void
}

const HEX = /^[0-9a-f]{64}$/

export class BlobStore {
  readonly #blobDir: string
  readonly #tmpDir: string
  readonly #maxStorage: number
  /** Size of every stored blob, so the quota needs no directory scan per upload. */
  readonly #sizes = new Map<string, number>()
  #stored = 0
  #reserved = 0
  /** Lease count per committed digest. */
  readonly #pins = new Map<string, number>()
  /** Per running sweep: the digests leased at any time since it began. */
  readonly #sweeps = new Set<Set<string>>()
  /** Renames into and unlinks from `blobs/` run one at a time: a lease check and the unlink it allows cannot interleave with a commit of the same digest. */
  #mutations: Promise<unknown> = Promise.resolve()

  constructor(init: BlobStoreInit) {
    this.#blobDir = join(init.dataDir, 'blobs', 'sha256')
    this.#tmpDir = join(init.dataDir, 'tmp')
    this.#maxStorage = init.maxStorageBytes ?? Number.POSITIVE_INFINITY
  }

  /** Creates the directories, removes temporary files a previous run left behind, sizes the blobs. */
  async start(): Promise<void> {
    await mkdir(this.#blobDir, { recursive: true })
    await mkdir(this.#tmpDir, { recursive: true })
    await this.removeStaleTempFiles()
    this.#sizes.clear()
    this.#stored = 0
    for (const digest of await this.list()) {
      const size = (await stat(this.#path(digest)).catch(() => undefined))?.size
      if (size != null) this.#track(digest, size)
    }
  }

  /** Bytes of the stored blobs. */
  get storedBytes(): number {
    return this.#stored
  }

  /** Bytes reserved by uploads in progress. */
  get reservedBytes(): number {
    return this.#reserved
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
    // Refused before a byte is read when the announced size does not fit.
    const reservation = this.#reserve(options.declaredSize ?? 0)
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
            reservation.grow(size)
            hash.update(chunk)
            yield chunk
          }
        },
        // flush: fsync before close, and pipeline resolves only after close
        createWriteStream(tmpPath, { flags: 'wx', flush: true }),
        { signal: options.signal },
      )
    } catch (err) {
      reservation.release()
      await rm(tmpPath, { force: true })
      // pipeline reports an abort as a generic AbortError; the reason says why.
      throw options.signal?.aborted ? options.signal.reason : storageError(err)
    }

    const digest = `sha256:${hash.digest('hex')}`
    if (expectedDigest !== undefined && digest !== expectedDigest) {
      reservation.release()
      await rm(tmpPath, { force: true })
      throw new DigestMismatchError(`Blob hashes to ${digest}, not ${expectedDigest}`)
    }
    return this.#staged(tmpPath, digest, size, reservation, options.lease)
  }

  /** A lease to pass to `stage()`/`write()`; release it once the blob is referenced (or not needed). */
  lease(): BlobLease {
    const held: string[] = []
    let released = false
    return {
      pin: (digest) => {
        if (released) return
        held.push(digest)
        this.#pins.set(digest, (this.#pins.get(digest) ?? 0) + 1)
        for (const touched of this.#sweeps) touched.add(digest)
      },
      release: () => {
        if (released) return
        released = true
        for (const digest of held) {
          const n = (this.#pins.get(digest) ?? 1) - 1
          if (n > 0) this.#pins.set(digest, n)
          else this.#pins.delete(digest)
        }
      },
    }
  }

  /**
   * Starts a garbage collection pass. List the candidates and the referenced digests after
   * this call; `collect()` then refuses every digest leased at any moment since, so a blob
   * whose record was written after the references were read is never deleted.
   */
  sweep(): BlobSweep {
    const touched = new Set(this.#pins.keys())
    this.#sweeps.add(touched)
    return {
      collect: (digest) =>
        this.#mutate(async () => {
          if (touched.has(digest) || this.#pins.has(digest)) return undefined
          const size = this.#sizes.get(digest) ?? 0
          return (await this.delete(digest)) ? size : undefined
        }),
      end: () => {
        this.#sweeps.delete(touched)
      },
    }
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
      this.#untrack(digest)
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

  #track(digest: string, size: number): void {
    this.#stored += size - (this.#sizes.get(digest) ?? 0)
    this.#sizes.set(digest, size)
  }

  #untrack(digest: string): void {
    this.#stored -= this.#sizes.get(digest) ?? 0
    this.#sizes.delete(digest)
  }

  #mutate<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#mutations.then(fn, fn)
    this.#mutations = run.catch(() => {})
    return run
  }

  /** Holds `bytes` of the quota; `grow()` raises the hold as an upload without a declared size is read. */
  #reserve(bytes: number): { grow(total: number): void; release(): void } {
    let held = 0
    const grow = (total: number) => {
      if (total <= held) return
      const free = this.#maxStorage - this.#stored - this.#reserved
      if (total - held > free) {
        throw new QuotaExceededError(
          `storing ${total} more bytes would exceed the ${this.#maxStorage}-byte storage quota (${this.#stored} stored, ${this.#reserved} being uploaded)`,
        )
      }
      this.#reserved += total - held
      held = total
    }
    grow(bytes)
    return {
      grow,
      release: () => {
        this.#reserved -= held
        held = 0
      },
    }
  }

  #staged(
    tmpPath: string,
    digest: string,
    size: number,
    reservation: { release(): void },
    lease: BlobLease | undefined,
  ): StagedBlob {
    let settled = false
    return {
      digest,
      size,
      commit: async () => {
        if (settled) throw new Error('Staged blob already committed or discarded')
        settled = true
        // Pinned before the rename is queued: a sweep cannot delete it between the two.
        lease?.pin(digest)
        const path = this.#path(digest)
        try {
          await this.#mutate(async () => {
            await rename(tmpPath, path)
            this.#track(digest, size)
          })
        } catch (err) {
          await rm(tmpPath, { force: true })
          throw storageError(err)
        } finally {
          reservation.release()
        }
        await syncDirectory(this.#blobDir).catch((err: unknown) => {
          throw storageError(err)
        }) // makes the rename itself durable
        return { digest, size, path }
      },
      discard: async () => {
        if (settled) return
        settled = true
        reservation.release()
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

/** A full disk (or filesystem quota) becomes StorageFullError; anything else is unchanged. */
function storageError(err: unknown): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  if (code !== 'ENOSPC' && code !== 'EDQUOT') return err
  return new StorageFullError(
    `hl-service's disk is full (${code} writing the blob); the upload was discarded`,
    { cause: err },
  )
}

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === 'ENOENT'
}

function notFoundOr(err: unknown, digest: string): unknown {
  return isNotFound(err) ? new BlobNotFoundError(`Unknown blob ${digest}`, { cause: err }) : err
}
