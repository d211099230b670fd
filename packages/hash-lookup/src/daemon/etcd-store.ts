/**
 * Service records in etcd, one key per service under a prefix.
 *
 * A record's `version` is the etcd mod revision of its key. Unlike etcd's per-key `version`,
 * which restarts at 1 when a key is deleted and created again, a mod revision is never
 * reused, so a writer holding a stale version cannot overwrite a record that was deleted
 * and re-created meanwhile. Writes are transactions comparing it.
 */

import type { Etcd3, IKeyValue, IWatchResponse, Watcher } from 'etcd3'
import {
  ClientClosedError,
  GRPCCancelledError,
  GRPCDeadlineExceededError,
  isRecoverableError,
} from 'etcd3'
import {
  DEFAULT_ETCD_PREFIX,
  DEFAULT_ETCD_TIMEOUT_MS,
  DEFAULT_LIST_LIMIT,
  MAX_LIST_LIMIT,
  MAX_PUT_ATTEMPTS,
  RECORD_HISTORY_LENGTH,
  WATCH_REOPEN_DELAY_MS,
} from '../constants.ts'
import {
  ConflictError,
  HashLookupError,
  InvalidNameError,
  InvalidRecordError,
  NotFoundError,
  RegistryUnavailableError,
} from '../errors.ts'
import { assertServiceName } from '../names.ts'
import {
  type ListPage,
  type ServiceRecord,
  type ServiceRecordFields,
  validateRecordInput,
} from '../records.ts'

export type { ListPage } from '../records.ts'

type CallOptions = NonNullable<Parameters<Etcd3['kv']['range']>[1]>

export interface RecordStoreComponents {
  etcd: Etcd3
}

export interface RecordStoreInit {
  /** Key prefix, default `DEFAULT_ETCD_PREFIX`. */
  prefix?: string
  /** Deadline of one operation, default `DEFAULT_ETCD_TIMEOUT_MS`. */
  timeoutMs?: number
  /** Clock for timestamps (tests). */
  now?: () => Date
}

export interface WriteOptions {
  /**
   * Version the writer last read: the write fails with ConflictError unless the record still
   * has it. 0 means the record must not exist. Without it a put replaces whatever is there.
   */
  expectedVersion?: number
}

export interface ListOptions {
  /** Only names starting with this. */
  prefix?: string
  /** Page size, default `DEFAULT_LIST_LIMIT`, at most `MAX_LIST_LIMIT`. */
  limit?: number
  /** Cursor: the `next` of the previous page. */
  after?: string
}

/** What a watch of the records reports. */
export interface RecordChangeListener {
  /** Records written or deleted, each with the etcd revision of that write. */
  changed(changes: Array<{ name: string; revision: number }>): void
  /** Changes may have been missed: the watch was cut (etcd restarted, history compacted). */
  reset(): void
}

interface StoredRecord extends ServiceRecordFields {
  createdAt: string
  updatedAt: string
}

const NAME_PREFIX = /^[a-z0-9-]*$/

export class RecordStore {
  readonly #etcd: Etcd3
  readonly #prefix: string
  /** Earlier versions of each record, one JSON array per name, outside the records' prefix
   * (so list and watch do not see them): `/mtc/services/` keeps them in `/mtc/services.history/`. */
  readonly #historyPrefix: string
  readonly #timeoutMs: number
  readonly #now: () => Date

  constructor(components: RecordStoreComponents, init: RecordStoreInit = {}) {
    this.#etcd = components.etcd
    this.#prefix = init.prefix ?? DEFAULT_ETCD_PREFIX
    this.#historyPrefix = `${this.#prefix.replace(/\/+$/, '')}.history/`
    this.#timeoutMs = init.timeoutMs ?? DEFAULT_ETCD_TIMEOUT_MS
    this.#now = init.now ?? (() => new Date())
  }

  /** Creates or replaces the record named `input.name`. */
  async put(input: unknown, options: WriteOptions = {}): Promise<ServiceRecord> {
    const fields = validateRecordInput(input)
    const expected = checkVersion(options.expectedVersion)
    const key = this.#key(fields.name)
    return this.#call(async (callOptions) => {
      // Read, then compare-and-swap on the mod revision read; retry only when unconditional.
      const historyKey = this.#historyKey(fields.name)
      for (let attempt = 1; ; attempt++) {
        const current = (await this.#etcd.kv.range({ key }, callOptions)).kvs[0]
        const currentVersion = current ? Number(current.mod_revision) : 0
        if (expected !== undefined && expected !== currentVersion) {
          throw conflict(fields.name, expected, currentVersion)
        }
        // The version being replaced joins the history in the same transaction.
        const history = (await this.#etcd.kv.range({ key: historyKey }, callOptions)).kvs[0]
        const historyVersion = history ? Number(history.mod_revision) : 0
        const previous = current != null ? decodeOrUndefined(current) : undefined
        const kept = [
          ...(previous != null ? [previous] : []),
          ...(history != null ? decodeHistory(history) : []),
        ].slice(0, RECORD_HISTORY_LENGTH)
        const now = this.#now().toISOString()
        const stored: StoredRecord = {
          ...fields,
          createdAt: (current && storedCreatedAt(current)) ?? now,
          updatedAt: now,
        }
        const txn = await this.#etcd.kv.txn(
          {
            compare: [
              { key, target: 'Mod', result: 'Equal', mod_revision: currentVersion },
              { key: historyKey, target: 'Mod', result: 'Equal', mod_revision: historyVersion },
            ],
            success: [
              { request_put: { key, value: Buffer.from(JSON.stringify(stored)) } },
              ...(kept.length > 0
                ? [{ request_put: { key: historyKey, value: Buffer.from(JSON.stringify(kept)) } }]
                : []),
            ],
          },
          callOptions,
        )
        if (txn.succeeded) return { ...stored, version: Number(txn.header.revision) }
        if (expected !== undefined || attempt >= MAX_PUT_ATTEMPTS) {
          throw new ConflictError(`Service "${fields.name}" changed while being written`)
        }
      }
    })
  }

  async get(name: string): Promise<ServiceRecord> {
    const key = this.#key(assertServiceName(name))
    return this.#call(async (callOptions) => {
      const kv = (await this.#etcd.kv.range({ key }, callOptions)).kvs[0]
      if (kv === undefined) throw notFound(name)
      return decode(kv)
    })
  }

  /**
   * The record and its earlier versions, newest first (at most RECORD_HISTORY_LENGTH
   * earlier ones): what `hl-cli history` shows.
   */
  async history(name: string): Promise<ServiceRecord[]> {
    const key = this.#key(assertServiceName(name))
    const historyKey = this.#historyKey(name)
    return this.#call(async (callOptions) => {
      const kv = (await this.#etcd.kv.range({ key }, callOptions)).kvs[0]
      if (kv === undefined) throw notFound(name)
      const history = (await this.#etcd.kv.range({ key: historyKey }, callOptions)).kvs[0]
      return [decode(kv), ...(history != null ? decodeHistory(history) : [])]
    })
  }

  /**
   * Makes an earlier version current again, as a new version (its image, tarball and
   * settings; new timestamps). Without `to`: the newest earlier version with another image.
   * Fails with ConflictError if the record changed meanwhile.
   */
  async rollback(name: string, to?: number): Promise<ServiceRecord> {
    if (to !== undefined && (!Number.isSafeInteger(to) || to < 1)) {
      throw new InvalidRecordError('the version to roll back to must be a positive integer')
    }
    const [current, ...earlier] = await this.history(name)
    let target: ServiceRecord | undefined
    if (to === undefined) {
      target = earlier.find((r) => r.imageId !== current!.imageId)
      if (target == null) {
        throw new NotFoundError(`Service "${name}" has no earlier version with another image`)
      }
    } else {
      if (to === current!.version) {
        throw new InvalidRecordError(`version ${to} of "${name}" is the current one`)
      }
      target = earlier.find((r) => r.version === to)
      if (target == null) {
        throw new NotFoundError(
          `Service "${name}" has no version ${to} (kept: ${earlier.map((r) => r.version).join(', ') || 'none'})`,
        )
      }
    }
    const { createdAt: _c, updatedAt: _u, version: _v, ...fields } = target
    return await this.put(fields, { expectedVersion: current!.version })
  }

  /** Digests of the tarballs earlier versions name (kept: a rollback needs them). */
  async historyBlobs(): Promise<Set<string>> {
    const from = Buffer.from(this.#historyPrefix)
    return this.#call(async (callOptions) => {
      const digests = new Set<string>()
      const res = await this.#etcd.kv.range({ key: from, range_end: prefixEnd(from) }, callOptions)
      for (const kv of res.kvs) {
        for (const r of decodeHistory(kv)) if (r.blob != null) digests.add(r.blob.digest)
      }
      return digests
    })
  }

  /** One page of records in name order. */
  async list(options: ListOptions = {}): Promise<ListPage> {
    const namePrefix = options.prefix ?? ''
    if (!NAME_PREFIX.test(namePrefix)) {
      throw new InvalidNameError(`Invalid name prefix ${JSON.stringify(namePrefix)}`)
    }
    const limit = options.limit ?? DEFAULT_LIST_LIMIT
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT) {
      throw new InvalidRecordError(`limit must be an integer from 1 to ${MAX_LIST_LIMIT}`)
    }
    const from = `${this.#prefix}${namePrefix}`
    // "\0" sorts before every name character, so `after\0` is the first key after `after`.
    const after =
      options.after === undefined
        ? undefined
        : `${this.#prefix}${assertServiceName(options.after)}\0`
    const start = after !== undefined && after > from ? after : from
    return this.#call(async (callOptions) => {
      const response = await this.#etcd.kv.range(
        { key: Buffer.from(start), range_end: prefixEnd(Buffer.from(from)), limit },
        callOptions,
      )
      const records = response.kvs.map(decode)
      const last = records.at(-1)
      return response.more && last ? { records, next: last.name } : { records }
    })
  }

  /** Deletes the record; resolves with the etcd revision of the deletion. */
  async delete(name: string, options: WriteOptions = {}): Promise<number> {
    const key = this.#key(assertServiceName(name))
    const expected = checkVersion(options.expectedVersion)
    return await this.#call(async (callOptions) => {
      const historyKey = this.#historyKey(name)
      if (expected === undefined) {
        const txn = await this.#etcd.kv.txn(
          {
            compare: [],
            success: [
              { request_delete_range: { key } },
              { request_delete_range: { key: historyKey } },
            ],
          },
          callOptions,
        )
        if (Number(txn.responses[0]?.response_delete_range.deleted) === 0) throw notFound(name)
        return Number(txn.header.revision)
      }
      const txn = await this.#etcd.kv.txn(
        {
          compare: [{ key, target: 'Mod', result: 'Equal', mod_revision: expected }],
          success: [
            { request_delete_range: { key } },
            { request_delete_range: { key: historyKey } },
          ],
          failure: [{ request_range: { key, keys_only: true } }],
        },
        callOptions,
      )
      if (txn.succeeded) {
        if (Number(txn.responses[0]?.response_delete_range.deleted) === 0) throw notFound(name)
        return Number(txn.header.revision)
      }
      const current = txn.responses[0]?.response_range.kvs[0]
      if (current === undefined) throw notFound(name)
      throw conflict(name, expected, Number(current.mod_revision))
    })
  }

  /**
   * Watches every record (an etcd watch on the prefix, resumed by the etcd3 client after a
   * reconnection). `reset` follows anything that may have lost changes: a reconnection, or
   * a watch etcd cancelled (history compacted), which is then opened again.
   */
  watch(listener: RecordChangeListener): { stop(): Promise<void> } {
    let watcher: Watcher | undefined
    let reopen: NodeJS.Timeout | undefined
    let stopped = false
    const prefix = this.#prefix
    const onData = (res: IWatchResponse): void => {
      const changes: Array<{ name: string; revision: number }> = []
      for (const ev of res.events) {
        const key = ev.kv.key.toString()
        if (key.startsWith(prefix)) {
          changes.push({ name: key.slice(prefix.length), revision: Number(ev.kv.mod_revision) })
        }
      }
      if (changes.length > 0) listener.changed(changes)
    }
    const open = (): void => {
      if (stopped) return
      let disconnected = false
      const w = this.#etcd.watch().prefix(prefix).watcher()
      watcher = w
      // etcd3 calls these from its stream handlers and rethrows what they throw on a later
      // tick, where nothing would catch it: they must not throw.
      w.on('data', (res) => {
        try {
          onData(res)
        } catch {
          listener.reset()
        }
      })
      w.on('disconnected', () => {
        disconnected = true
      })
      w.on('connected', () => {
        if (disconnected) listener.reset()
        disconnected = false
      })
      w.on('error', () => {
        // Cancelled by etcd (e.g. compacted history): a new watch from now on.
        void w.cancel().catch(() => {})
        listener.reset()
        if (!stopped) reopen = setTimeout(open, WATCH_REOPEN_DELAY_MS)
      })
    }
    open()
    return {
      async stop() {
        stopped = true
        clearTimeout(reopen)
        await watcher?.cancel().catch(() => {})
      },
    }
  }

  #key(name: string): Buffer {
    return Buffer.from(`${this.#prefix}${name}`)
  }

  #historyKey(name: string): Buffer {
    return Buffer.from(`${this.#historyPrefix}${name}`)
  }

  /** Runs one operation under one deadline; etcd's own failures become RegistryUnavailableError. */
  async #call<T>(operation: (options: CallOptions) => Promise<T>): Promise<T> {
    try {
      return await operation({ deadline: Date.now() + this.#timeoutMs })
    } catch (err) {
      if (err instanceof HashLookupError || !isUnavailable(err)) throw err
      throw new RegistryUnavailableError(`etcd unavailable: ${(err as Error).message}`, {
        cause: err,
      })
    }
  }
}

/** Errors meaning "etcd did not answer", as opposed to a bad request. */
function isUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false
  return (
    isRecoverableError(err) ||
    err instanceof GRPCDeadlineExceededError ||
    err instanceof GRPCCancelledError ||
    err instanceof ClientClosedError ||
    // cockatiel's open circuit breaker, which the etcd3 client puts in front of each host
    (err as { isBrokenCircuitError?: boolean }).isBrokenCircuitError === true
  )
}

function checkVersion(version: number | undefined): number | undefined {
  if (version !== undefined && (!Number.isSafeInteger(version) || version < 0)) {
    throw new InvalidRecordError('expectedVersion must be a non-negative integer')
  }
  return version
}

function decode(kv: IKeyValue): ServiceRecord {
  const { createdAt, updatedAt, ...fields } = JSON.parse(kv.value.toString()) as StoredRecord
  return { ...validateRecordInput(fields), createdAt, updatedAt, version: Number(kv.mod_revision) }
}

/** A stored record, or undefined when it is corrupt (it can still be replaced). */
function decodeOrUndefined(kv: IKeyValue): ServiceRecord | undefined {
  try {
    return decode(kv)
  } catch {
    return undefined
  }
}

/** The earlier versions kept for a record; entries that no longer validate are skipped. */
function decodeHistory(kv: IKeyValue): ServiceRecord[] {
  let list: unknown
  try {
    list = JSON.parse(kv.value.toString())
  } catch {
    return []
  }
  if (!Array.isArray(list)) return []
  const out: ServiceRecord[] = []
  for (const entry of list) {
    try {
      const { createdAt, updatedAt, version, ...fields } = entry as ServiceRecord
      if (typeof version !== 'number') continue
      out.push({ ...validateRecordInput(fields), createdAt, updatedAt, version })
    } catch {
      // skipped
    }
  }
  return out
}

/** createdAt of a stored record, tolerating a corrupt value so it can still be replaced. */
function storedCreatedAt(kv: IKeyValue): string | undefined {
  try {
    const { createdAt } = JSON.parse(kv.value.toString()) as Partial<StoredRecord>
    return typeof createdAt === 'string' ? createdAt : undefined
  } catch {
    return undefined
  }
}

/** The first key after every key starting with `prefix` (etcd's range_end for a prefix). */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix)
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++
      return end.subarray(0, i + 1)
    }
  }
  return Buffer.from([0]) // all 0xff: etcd reads "\0" as "to the end of the keyspace"
}

function notFound(name: string): NotFoundError {
  return new NotFoundError(`Unknown service "${name}"`)
}

function conflict(name: string, expected: number, actual: number): ConflictError {
  return new ConflictError(
    expected === 0
      ? `Service "${name}" already exists (version ${actual})`
      : actual === 0
        ? `Service "${name}" does not exist (expected version ${expected})`
        : `Service "${name}" is at version ${actual}, not ${expected}`,
  )
}
