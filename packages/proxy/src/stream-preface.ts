import type { Readable } from 'node:stream'
import { PREFACE_TIMEOUT_MS } from './constants.ts'
import { ProxyError } from './errors.ts'

/**
 * The one line an instance writes on every `/mtc/http/2.0.0` stream before relaying any
 * byte of its service: `+OK\n` once it connected to the local service (what follows is
 * the service's raw bytes), or `-ERR_SERVICE_UNREACHABLE <short message>\n` and the
 * stream's end when the connection was refused or timed out. A refusal means nothing of
 * the request reached the service, so the caller may send it elsewhere whatever its method.
 */
export const PREFACE_OK = '+OK\n'
/** The code of the refusal line. */
export const PREFACE_REFUSAL_CODE = 'ERR_SERVICE_UNREACHABLE'
/** The longest preface line a reader accepts, newline included: longer is a protocol error. */
export const MAX_PREFACE_BYTES = 256

const NEWLINE = 0x0a
const OK = Buffer.from(PREFACE_OK)
const REFUSAL_PREFIX = `-${PREFACE_REFUSAL_CODE}`

/** What an instance said on a stream. */
export type Preface = { ok: true } | { ok: false; message: string }

/** A preface that is not one: oversized, unterminated, or not `+OK` / `-CODE ...`. */
export class PrefaceError extends Error {
  override readonly name = 'PrefaceError'
}

// ------------------------------------------------------------------ instance side

/** The `+OK\n` line, as bytes (shared: do not modify). */
export function prefaceOk(): Buffer {
  return OK
}

/** The refusal line for `reason`, kept on one line and within MAX_PREFACE_BYTES. */
export function prefaceRefusal(reason: string): Buffer {
  const room = MAX_PREFACE_BYTES - REFUSAL_PREFIX.length - 2 // space and newline
  // One line of printable ASCII: a reason is an OS error message, never trusted as more.
  let text = reason.replace(/[^\x21-\x7e]+/g, ' ').trim()
  if (text === '') text = 'unreachable'
  if (text.length > room) text = text.slice(0, room)
  return Buffer.from(`${REFUSAL_PREFIX} ${text}\n`, 'latin1')
}

// ------------------------------------------------------------------ caller side

/**
 * Reads the preface from bytes as they arrive, in any chunking. `push` returns undefined
 * while the line is incomplete; then the preface and the bytes after it (the service's);
 * it throws a PrefaceError as soon as the bytes cannot be a preface.
 */
export class PrefaceReader {
  private buffered: Buffer = Buffer.alloc(0)

  push(chunk: Uint8Array): { preface: Preface; rest: Buffer } | undefined {
    const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
    const data = this.buffered.length === 0 ? bytes : Buffer.concat([this.buffered, bytes])
    const end = data.indexOf(NEWLINE)
    if (end < 0) {
      if (data.length >= MAX_PREFACE_BYTES)
        throw new PrefaceError(`no preface within ${MAX_PREFACE_BYTES} bytes`)
      checkStart(data)
      this.buffered = Buffer.from(data) // a copy: the caller may reuse its chunk
      return undefined
    }
    if (end + 1 > MAX_PREFACE_BYTES)
      throw new PrefaceError(`preface longer than ${MAX_PREFACE_BYTES} bytes`)
    this.buffered = Buffer.alloc(0)
    return { preface: parseLine(data.subarray(0, end + 1)), rest: data.subarray(end + 1) }
  }
}

/** Fails early on bytes that cannot start a preface (e.g. an HTTP answer from an old peer). */
function checkStart(data: Buffer): void {
  const n = Math.min(data.length, OK.length - 1)
  if (data.subarray(0, n).equals(OK.subarray(0, n))) return
  const prefix = Buffer.from(REFUSAL_PREFIX, 'latin1')
  const m = Math.min(data.length, prefix.length)
  if (data.subarray(0, m).equals(prefix.subarray(0, m))) return
  throw new PrefaceError(
    `not a preface: ${JSON.stringify(data.subarray(0, 16).toString('latin1'))}`,
  )
}

function parseLine(line: Buffer): Preface {
  if (line.equals(OK)) return { ok: true }
  const text = line.toString('latin1', 0, line.length - 1)
  if (text === REFUSAL_PREFIX) return { ok: false, message: '' }
  if (text.startsWith(`${REFUSAL_PREFIX} `))
    return { ok: false, message: text.slice(REFUSAL_PREFIX.length + 1) }
  throw new PrefaceError(`not a preface: ${JSON.stringify(text.slice(0, 32))}`)
}

/**
 * Reads the preface from `source` (a StreamDuplex just opened) and puts back what followed
 * it, so the service's bytes are read next as if the preface had never been there.
 * Resolves once the instance connected to its service; rejects with ProxyError:
 * `ERR_SERVICE_UNREACHABLE` for a refusal, `ERR_INSTANCE_UNREACHABLE` for a stream that
 * ended, failed, timed out or carried no valid preface. In every case nothing was sent.
 */
export function readPreface(source: Readable, timeoutMs = PREFACE_TIMEOUT_MS): Promise<void> {
  const { promise, resolve, reject } = Promise.withResolvers<void>()
  const reader = new PrefaceReader()
  const unreachable = (detail: string, cause?: unknown): ProxyError =>
    new ProxyError('ERR_INSTANCE_UNREACHABLE', `bad stream preface: ${detail}`, { cause })
  const done = (err?: ProxyError): void => {
    clearTimeout(timer)
    source.off('readable', onReadable)
    source.off('end', onEnd)
    source.off('error', onError)
    source.off('close', onClose)
    if (err == null) resolve()
    else reject(err)
  }
  const onReadable = (): void => {
    for (;;) {
      const chunk = source.read() as Buffer | null
      if (chunk == null) return
      let got: ReturnType<PrefaceReader['push']>
      try {
        got = reader.push(chunk)
      } catch (err) {
        done(unreachable((err as Error).message, err))
        return
      }
      if (got == null) continue
      if (got.rest.length > 0) source.unshift(got.rest)
      if (got.preface.ok) done()
      else done(new ProxyError('ERR_SERVICE_UNREACHABLE', got.preface.message || undefined))
      return
    }
  }
  const onEnd = (): void => done(unreachable('the stream ended before it'))
  const onError = (err: Error): void => done(unreachable(err.message, err))
  const onClose = (): void => done(unreachable('the stream closed before it'))
  const timer = setTimeout(() => done(unreachable(`none within ${timeoutMs} ms`)), timeoutMs)
  source.on('readable', onReadable)
  source.on('end', onEnd)
  source.on('error', onError)
  source.on('close', onClose)
  return promise
}
