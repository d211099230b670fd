import type { IncomingMessage, ServerResponse } from 'node:http'
import { finished, type Readable, type Writable } from 'node:stream'

/**
 * `stream.pipeline(src, dst, done)` for one source and one destination, without its cost
 * on the request path: pipeline makes an AbortController per call and aborts it when
 * done, which builds a DOMException with a stack trace every time (~1-2 % of a proxy's
 * CPU in profiles). Same contract: an error on either side destroys the other, and
 * `done` is called once, with the first error, or with null once `dst` finished.
 */
export function pipe(src: Readable, dst: Writable, done: (err: Error | null) => void): void {
  let called = false
  const end = (err: Error | null): void => {
    if (called) return
    called = true
    done(err)
  }
  finished(src, (err) => {
    if (err == null) return // pipe() ends dst; dst's finish reports success
    if (!dst.destroyed) dst.destroy(err)
    end(err)
  })
  finished(dst, (err) => {
    if (err != null && !src.destroyed) src.destroy(err)
    end(err ?? null)
  })
  src.pipe(dst)
}

/**
 * Sends `res`'s head now unless the first body chunk goes out with it: call right after
 * `res.writeHead()` and `pipe(src, res)` for a response relayed from `src`. Body bytes
 * parsed together with the head are flowing by the next tick (one write for both, as
 * before); a head alone (server-sent events, a long poll) is not held until the first
 * byte of the body.
 */
export function flushHeadSoon(src: IncomingMessage, res: ServerResponse): void {
  process.nextTick(() => {
    if (!src.readableDidRead && !src.complete && !res.destroyed) res.flushHeaders()
  })
}
