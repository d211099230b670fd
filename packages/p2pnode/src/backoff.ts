import { setTimeout as sleep } from 'node:timers/promises'

export interface BackoffInit {
  initialMs: number
  maxMs: number
  factor: number
}

/** Capped exponential backoff with full jitter, so many nodes do not redial in step. */
export class Backoff {
  private readonly init: BackoffInit
  private attempt = 0

  constructor(init: BackoffInit) {
    this.init = init
  }

  reset(): void {
    this.attempt = 0
  }

  nextDelayMs(): number {
    const { initialMs, maxMs, factor } = this.init
    const cap = Math.min(maxMs, initialMs * factor ** this.attempt)
    if (cap < maxMs) this.attempt++
    return cap / 2 + Math.random() * (cap / 2)
  }

  /** Waits the next delay; resolves false when the signal aborted the wait. */
  async wait(signal: AbortSignal): Promise<boolean> {
    try {
      await sleep(this.nextDelayMs(), undefined, { signal })
      return true
    } catch {
      return false
    }
  }
}
