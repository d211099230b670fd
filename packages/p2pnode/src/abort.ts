/**
 * Settles with `promise`, or rejects with the signal's reason once it aborts, whichever
 * comes first: for libp2p calls that do not always honour their signal.
 */
export async function raceSignal<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  signal.throwIfAborted()
  const { promise: aborted, reject } = Promise.withResolvers<never>()
  const onAbort = (): void => reject(signal.reason)
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    return await Promise.race([promise, aborted])
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}

/** Iterates `source` until it ends or `signal` aborts (then the iteration throws). */
export async function* iterateUntil<T>(
  source: AsyncIterable<T>,
  signal: AbortSignal,
): AsyncGenerator<T> {
  const it = source[Symbol.asyncIterator]()
  try {
    while (true) {
      const next = await raceSignal(it.next(), signal)
      if (next.done === true) return
      yield next.value
    }
  } finally {
    void it.return?.()?.catch(() => {})
  }
}
