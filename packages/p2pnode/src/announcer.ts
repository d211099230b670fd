import { setTimeout as sleep } from 'node:timers/promises'
import type { Libp2p, Logger, PeerId } from '@libp2p/interface'
import { Backoff, type BackoffInit } from './backoff.ts'
import {
  ANNOUNCE_INTERVAL_MS,
  ANNOUNCE_MIN_GAP_MS,
  ANNOUNCE_RETRY_INITIAL_MS,
  ANNOUNCE_RETRY_MAX_MS,
} from './constants.ts'
import { type DiscoveryKind, provide } from './discovery.ts'

export interface AnnouncerOptions {
  /** Records are placed again this often (default ANNOUNCE_INTERVAL_MS)... */
  intervalMs?: number
  /**
   * ...after a first wait of this long, doubled every round up to `intervalMs`, from each
   * new key on (default `intervalMs`): a record placed while the DHT was still forming
   * reached few peers, the next rounds spread it.
   */
  firstIntervalMs?: number
  /** Waits after a failed round (default ANNOUNCE_RETRY_INITIAL_MS to ANNOUNCE_RETRY_MAX_MS). */
  retry?: BackoffInit
  /** Bound on placing one record (default 30 s). */
  timeoutMs?: number
  /** A round as soon as a peer connects (at most every ANNOUNCE_MIN_GAP_MS; default true). */
  wakeOnConnect?: boolean
}

/**
 * Keeps this node's provider records alive: each key is announced at once, retried with
 * backoff while the DHT has no peers, re-announced every interval and (unless told not to)
 * as soon as a new peer connects (it may be the first DHT server that can hold the record).
 */
export class Announcer {
  private readonly libp2p: Libp2p
  private readonly log: Logger
  private readonly intervalMs: number
  private readonly firstIntervalMs: number
  private readonly retry: BackoffInit
  private readonly timeoutMs: number
  private readonly wakeOnConnect: boolean
  private readonly keys = new Map<string, { kind: DiscoveryKind; name: string; placed: boolean }>()
  private controller?: AbortController
  private loop?: Promise<void>
  private wake?: () => void
  private lastRoundAt = 0
  /** The wait after the next successful round. */
  private nextIntervalMs: number

  constructor(libp2p: Libp2p, log: Logger, options: AnnouncerOptions = {}) {
    this.libp2p = libp2p
    this.log = log
    this.intervalMs = options.intervalMs ?? ANNOUNCE_INTERVAL_MS
    this.firstIntervalMs = Math.min(options.firstIntervalMs ?? this.intervalMs, this.intervalMs)
    this.retry = options.retry ?? {
      initialMs: ANNOUNCE_RETRY_INITIAL_MS,
      maxMs: ANNOUNCE_RETRY_MAX_MS,
      factor: 2,
    }
    this.timeoutMs = options.timeoutMs ?? 30_000
    this.wakeOnConnect = options.wakeOnConnect ?? true
    this.nextIntervalMs = this.firstIntervalMs
  }

  add(kind: DiscoveryKind, name = ''): void {
    const key = `${kind}/${name}`
    if (!this.keys.has(key)) {
      this.keys.set(key, { kind, name, placed: false })
      this.nextIntervalMs = this.firstIntervalMs
    }
    this.wake?.()
  }

  remove(kind: DiscoveryKind, name = ''): void {
    this.keys.delete(`${kind}/${name}`)
  }

  start(): void {
    if (this.controller != null) return
    this.controller = new AbortController()
    if (this.wakeOnConnect) this.libp2p.addEventListener('peer:connect', this.onConnect)
    this.loop = this.run(this.controller.signal)
  }

  async stop(): Promise<void> {
    this.libp2p.removeEventListener('peer:connect', this.onConnect)
    this.controller?.abort()
    this.controller = undefined
    this.wake?.()
    await this.loop
  }

  private readonly onConnect = (_evt: CustomEvent<PeerId>): void => {
    if (Date.now() - this.lastRoundAt >= ANNOUNCE_MIN_GAP_MS) this.wake?.()
  }

  private async run(signal: AbortSignal): Promise<void> {
    const retry = new Backoff(this.retry)
    while (!signal.aborted) {
      let failed = false
      this.lastRoundAt = Date.now()
      for (const key of [...this.keys.values()]) {
        if (signal.aborted) return
        try {
          await provide(this.libp2p, key.kind, key.name, {
            signal: AbortSignal.any([signal, AbortSignal.timeout(this.timeoutMs)]),
          })
          if (!key.placed) this.log('%s announced in the DHT', describe(key))
          key.placed = true
        } catch (err) {
          failed = true
          this.log.trace('announcing %s failed: %s', describe(key), (err as Error).message)
        }
      }
      let waitMs: number
      if (failed) {
        waitMs = retry.nextDelayMs()
      } else {
        retry.reset()
        waitMs = this.nextIntervalMs
        this.nextIntervalMs = Math.min(waitMs * 2, this.intervalMs)
      }
      await this.sleep(waitMs, signal)
    }
  }

  /** Sleeps, but wakes early when a key is added or a peer connects. */
  private async sleep(ms: number, signal: AbortSignal): Promise<void> {
    const woken = new Promise<void>((resolve) => {
      this.wake = resolve
    })
    await Promise.race([sleep(ms, undefined, { signal }).catch(() => {}), woken])
    this.wake = undefined
  }
}

/** `service hello`, `allocator`: as a log line names a key. */
function describe(key: { kind: DiscoveryKind; name: string }): string {
  return key.name === '' ? key.kind : `${key.kind} ${key.name}`
}
