import { setTimeout as sleep } from 'node:timers/promises'

/** Polls `condition` every `intervalMs` until it holds; rejects with `message` on abort. */
export async function waitUntil(
  condition: () => boolean,
  signal: AbortSignal,
  message: string,
  intervalMs = 50,
): Promise<void> {
  while (!condition()) {
    if (signal.aborted) throw new Error(message)
    await sleep(intervalMs, undefined, { signal }).catch(() => {})
  }
}
