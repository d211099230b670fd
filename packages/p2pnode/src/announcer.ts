import { setTimeout as sleep } from 'node:timers/promises'
import type { Libp2p, Logger, PeerId } from '@libp2p/interface'
import { Backoff } from './backoff.ts'
import {
  ANNOUNCE_INTERVAL_MS,
  ANNOUNCE_MIN_GAP_MS,
  ANNOUNCE_RETRY_INITIAL_MS,
  ANNOUNCE_RETRY_MAX_MS,
} from './constants.ts'
import { type DiscoveryKind, provide } from './discovery.ts'

/**
 * Keeps this node's provider records alive: each key is announced at once, retried with
 * backoff while the DHT has no peers, re-announced every interval and as soon as a new
 * peer connects (it may be the first DHT server that can hold the record).
 */
export class Announcer {
  private readonly libp2p: Libp2p
  private readonly log: Logger
  private readonly intervalMs: number
  private readonly keys = new Map<string, { kind: DiscoveryKind; name: string }>()
  private controller?: AbortController
  private loop?: Promise<void>
  private wake?: () => void
  private lastRoundAt = 0

  constructor(libp2p: Libp2p, log: Logger, intervalMs = ANNOUNCE_INTERVAL_MS) {
    this.libp2p = libp2p
    this.log = log
    this.intervalMs = intervalMs
  }

  add(kind: DiscoveryKind, name = ''): void {
    this.keys.set(`${kind}/${name}`, { kind, name })
    this.wake?.()
  }

  remove(kind: DiscoveryKind, name = ''): void {
    this.keys.delete(`${kind}/${name}`)
  }

  start(): void {
    if (this.controller != null) return
    this.controller = new AbortController()
    this.libp2p.addEventListener('peer:connect', this.onConnect)
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
    const retry = new Backoff({
      initialMs: ANNOUNCE_RETRY_INITIAL_MS,
      maxMs: ANNOUNCE_RETRY_MAX_MS,
      factor: 2,
    })
    while (!signal.aborted) {
      let failed = false
      this.lastRoundAt = Date.now()
      for (const { kind, name } of [...this.keys.values()]) {
        if (signal.aborted) return
        try {
          await provide(this.libp2p, kind, name, {
            signal: AbortSignal.any([signal, AbortSignal.timeout(30_000)]),
          })
        } catch (err) {
          failed = true
          this.log.trace('announcing %s/%s failed: %s', kind, name, (err as Error).message)
        }
      }
      if (!failed) retry.reset()
      await this.sleep(failed ? retry.nextDelayMs() : this.intervalMs, signal)
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
