/**
 * Garbage collection of stored tarballs: a blob of this hl-service's data directory that no
 * record in etcd references is deleted. A sweep runs at start, after every record write or
 * delete (coalesced: one at a time, one more queued at most) and every `intervalMs`, which
 * catches records changed through another hl-service sharing the etcd cluster.
 *
 * Safe against uploads in flight: a blob is committed under a lease held until its record
 * is written, and a sweep never deletes a digest leased at any moment since it began (see
 * BlobStore.sweep), while it reads the records only after beginning. When the records
 * cannot all be read (etcd down), nothing is deleted.
 */

import type { BlobStore } from '@mtc/blobs'
import { BLOB_GC_INTERVAL_MS, BLOB_GC_MAX_RECORD_PAGES, MAX_LIST_LIMIT } from '../constants.ts'
import type { RecordStore } from './etcd-store.ts'

export interface BlobCollectorComponents {
  blobs: BlobStore
  records: Pick<RecordStore, 'list'> & Partial<Pick<RecordStore, 'historyBlobs'>>
  log: (format: string, ...args: unknown[]) => void
  /** Called for each blob deleted (stop announcing it, count it). */
  onCollected?: (digest: string, bytes: number) => void
  /** Called after each sweep requested through `request()`/`start()`, with its outcome. */
  onSweep?: (outcome: 'ok' | 'failed') => void
}

export interface BlobCollectorInit {
  /** Period of the background sweep; default BLOB_GC_INTERVAL_MS. */
  intervalMs?: number
}

export interface SweepResult {
  collected: string[]
  bytes: number
}

export class BlobCollector {
  readonly #c: BlobCollectorComponents
  readonly #intervalMs: number
  #timer: NodeJS.Timeout | undefined
  #running: Promise<void> | undefined
  #again = false
  #stopped = false

  constructor(components: BlobCollectorComponents, init: BlobCollectorInit = {}) {
    this.#c = components
    this.#intervalMs = init.intervalMs ?? BLOB_GC_INTERVAL_MS
  }

  /** Sweeps now (in the background) and then every interval. */
  start(): void {
    this.#stopped = false
    this.request()
    this.#timer = setInterval(() => this.request(), this.#intervalMs)
    this.#timer.unref()
  }

  /** Waits for a sweep in progress; no new one starts. */
  async stop(): Promise<void> {
    this.#stopped = true
    clearInterval(this.#timer)
    this.#timer = undefined
    this.#again = false
    await this.#running
  }

  /** Asks for a sweep soon; returns when the sweep that covers this request has ended. */
  request(): Promise<void> {
    if (this.#stopped) return Promise.resolve()
    if (this.#running != null) {
      this.#again = true // the loop below runs once more, after the records changed
      return this.#running
    }
    this.#running = (async () => {
      do {
        this.#again = false
        try {
          await this.sweep()
          this.#c.onSweep?.('ok')
        } catch (err) {
          this.#c.log('blob collection skipped: %s', (err as Error).message)
          this.#c.onSweep?.('failed')
        }
      } while (this.#again && !this.#stopped)
      this.#running = undefined
    })()
    return this.#running
  }

  /** One pass; throws (deleting nothing) when the records cannot all be read. */
  async sweep(): Promise<SweepResult> {
    const { blobs, records, log, onCollected } = this.#c
    const sweep = blobs.sweep()
    try {
      const stored = await blobs.list()
      if (stored.length === 0) return { collected: [], bytes: 0 }
      const referenced = new Set<string>()
      let after: string | undefined
      for (let page = 0; ; page++) {
        if (page >= BLOB_GC_MAX_RECORD_PAGES) {
          throw new Error(`more than ${BLOB_GC_MAX_RECORD_PAGES} pages of records`)
        }
        const { records: list, next } = await records.list({ limit: MAX_LIST_LIMIT, after })
        for (const r of list) if (r.blob != null) referenced.add(r.blob.digest)
        if (next == null) break
        after = next
      }
      // Earlier versions' tarballs stay: `hl-cli rollback` makes them current again.
      for (const d of (await records.historyBlobs?.()) ?? []) referenced.add(d)
      const collected: string[] = []
      let bytes = 0
      for (const digest of stored) {
        if (referenced.has(digest)) continue
        const size = await sweep.collect(digest)
        if (size == null) continue
        collected.push(digest)
        bytes += size
        onCollected?.(digest, size)
      }
      if (collected.length > 0) {
        log('collected %d unreferenced blob(s), %d bytes', collected.length, bytes)
      }
      return { collected, bytes }
    } finally {
      sweep.end()
    }
  }
}
