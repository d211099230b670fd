import { setTimeout as sleep } from 'node:timers/promises'

/** Where a lifecycle reports a part that failed to stop, or a failed round of a loop. */
export type LifecycleLog = (format: string, ...args: unknown[]) => void

/**
 * The parts a daemon started, stopped in the reverse order: each part is registered
 * right after it started, so a start that fails half-way stops exactly what it started.
 * `stop` runs once (a second call waits for the first); a part that fails to stop is
 * logged and the others are still stopped.
 */
export class Lifecycle {
  private readonly parts: Array<{ what: string; stop: () => unknown }> = []
  private readonly logError: LifecycleLog
  /** Ends every task at once when stop begins (each is then awaited in its turn). */
  private readonly tasks = new AbortController()
  private stopping?: Promise<void>

  constructor(logError: LifecycleLog) {
    this.logError = logError
  }

  /** Whether stop has been called (a daemon reports itself unhealthy from then on). */
  get stopped(): boolean {
    return this.stopping != null
  }

  /** Registers how to stop a part that has just started. */
  defer(what: string, stop: () => unknown): void {
    if (this.stopping != null) throw new Error(`lifecycle: ${what} started after stop`)
    this.parts.push({ what, stop })
  }

  /**
   * A task that runs until stopped (`run` gets the signal that ends it): the signal is
   * aborted as stop begins, and stop waits for the task in its turn. A failure is logged.
   */
  task(what: string, run: (signal: AbortSignal) => Promise<unknown>): void {
    if (this.stopping != null) throw new Error(`lifecycle: ${what} started after stop`)
    const running = run(this.tasks.signal).catch((err: Error) =>
      this.logError('%s failed: %s', what, err.message),
    )
    this.defer(what, () => running)
  }

  /** `round` now and every `intervalMs` until stopped; a failed round is logged, not fatal. */
  loop(what: string, intervalMs: number, round: (signal: AbortSignal) => Promise<unknown>): void {
    this.task(what, async (signal) => {
      while (!signal.aborted) {
        await round(signal).catch((err: Error) => this.logError('%s failed: %s', what, err.message))
        await sleep(intervalMs, undefined, { signal }).catch(() => {})
      }
    })
  }

  /** Runs `start`; when it throws, stops what it had started and rethrows. */
  async starting<T>(start: () => Promise<T>): Promise<T> {
    try {
      return await start()
    } catch (err) {
      await this.stop()
      throw err
    }
  }

  /** Stops every part, last started first. Safe to call twice. */
  async stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.tasks.abort()
      for (const { what, stop } of this.parts.splice(0).reverse()) {
        try {
          await stop()
        } catch (err) {
          this.logError('stopping %s: %s', what, (err as Error).message)
        }
      }
    })()
    await this.stopping
  }
}
