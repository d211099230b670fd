import type { Stream } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'
import { STREAM_READ_HIGH_WATER_BYTES } from './constants.ts'

/** The stream ended before a whole frame arrived. */
export class UnexpectedEndError extends Error {
  static readonly code = 'ERR_UNEXPECTED_END'
  override readonly name = 'UnexpectedEndError'
  readonly code = UnexpectedEndError.code
}

/** A frame longer than the reader allows. */
export class FrameTooLargeError extends Error {
  static readonly code = 'ERR_PROTOCOL'
  override readonly name = 'FrameTooLargeError'
  readonly code = FrameTooLargeError.code
}

/**
 * Sends `data`, waiting for 'drain' when the stream's write buffer is full, so a fast
 * producer cannot queue unbounded memory in front of a slow link.
 */
export async function sendWithBackpressure(
  stream: Stream,
  data: Uint8Array,
  signal?: AbortSignal,
): Promise<void> {
  if (stream.send(data)) return
  await drainOrClose(stream, signal)
}

function drainOrClose(stream: Stream, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      stream.removeEventListener('drain', onDrain)
      stream.removeEventListener('close', onClose)
      signal?.removeEventListener('abort', onAbort)
    }
    const onDrain = (): void => {
      cleanup()
      resolve()
    }
    const onClose = (evt: Event): void => {
      cleanup()
      reject((evt as Event & { error?: Error }).error ?? new UnexpectedEndError('stream closed'))
    }
    const onAbort = (): void => {
      cleanup()
      reject(signal?.reason)
    }
    if (signal?.aborted === true) return onAbort()
    stream.addEventListener('drain', onDrain)
    stream.addEventListener('close', onClose)
    signal?.addEventListener('abort', onAbort)
  })
}

/** Unsigned LEB128 (the length prefix of libp2p's length-prefixed streams). */
export function encodeVarint(n: number): Uint8Array {
  const out: number[] = []
  let v = n
  do {
    let byte = v & 0x7f
    v = Math.floor(v / 128)
    if (v > 0) byte |= 0x80
    out.push(byte)
  } while (v > 0)
  return Uint8Array.from(out)
}

/**
 * Reads varint-length-prefixed frames from a libp2p stream with backpressure: the
 * stream is paused while more than STREAM_READ_HIGH_WATER_BYTES wait here unread
 * (libp2p's own byteStream buffers without bound and resets the stream at 4 MiB).
 */
export class FrameReader {
  private readonly stream: Stream
  private readonly buffer = new Uint8ArrayList()
  private ended = false
  private error?: Error
  private wake?: () => void

  constructor(stream: Stream) {
    this.stream = stream
    stream.addEventListener('message', (evt) => {
      this.buffer.append(evt.data)
      // Paused from a microtask: a message dispatched by resume() itself must not pause
      // before resume() sends its window update, or yamux's state and the stream's differ
      // and the sender is never held back again.
      if (this.buffer.byteLength > STREAM_READ_HIGH_WATER_BYTES) {
        queueMicrotask(() => {
          if (
            this.buffer.byteLength > STREAM_READ_HIGH_WATER_BYTES &&
            stream.readStatus === 'readable'
          ) {
            stream.pause()
          }
        })
      }
      this.wake?.()
    })
    stream.addEventListener('remoteCloseWrite', () => {
      this.ended = true
      this.wake?.()
    })
    stream.addEventListener('close', (evt) => {
      this.ended = true
      this.error = (evt as Event & { error?: Error }).error
      this.wake?.()
    })
  }

  /** The next frame's payload; throws FrameTooLargeError above `maxBytes`. */
  async read(maxBytes: number, signal?: AbortSignal): Promise<Uint8Array> {
    for (;;) {
      const header = this.header()
      if (header != null) {
        if (header.length > maxBytes) {
          throw new FrameTooLargeError(
            `frame of ${header.length} bytes exceeds the ${maxBytes}-byte limit`,
          )
        }
        if (this.buffer.byteLength >= header.size + header.length) {
          this.buffer.consume(header.size)
          const frame = this.buffer.subarray(0, header.length)
          this.buffer.consume(header.length)
          this.maybeResume()
          return frame
        }
      }
      if (this.endedForGood()) {
        throw this.error ?? new UnexpectedEndError('stream ended in the middle of a message')
      }
      await this.waitForData(signal)
    }
  }

  /** No more bytes can come: the remote closed and the stream holds nothing undelivered. */
  private endedForGood(): boolean {
    if (this.error != null) return true
    const s = this.stream
    const remoteDone = this.ended || s.remoteWriteStatus === 'closed' || s.status !== 'open'
    return remoteDone && s.readBufferLength === 0
  }

  private maybeResume(): void {
    if (
      this.stream.readStatus === 'paused' &&
      this.buffer.byteLength <= STREAM_READ_HIGH_WATER_BYTES / 2
    ) {
      this.stream.resume()
    }
  }

  /** The varint length prefix at the head of the buffer, once complete. */
  private header(): { length: number; size: number } | undefined {
    let length = 0
    for (let i = 0; i < Math.min(this.buffer.byteLength, 5); i++) {
      const byte = this.buffer.get(i)
      length += (byte & 0x7f) * 128 ** i
      if ((byte & 0x80) === 0) return { length, size: i + 1 }
    }
    if (this.buffer.byteLength >= 5) throw new FrameTooLargeError('length prefix too long')
    return undefined
  }

  private async waitForData(signal?: AbortSignal): Promise<void> {
    this.maybeResume()
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => reject(signal?.reason)
      if (signal?.aborted === true) return onAbort()
      signal?.addEventListener('abort', onAbort, { once: true })
      this.wake = () => {
        signal?.removeEventListener('abort', onAbort)
        this.wake = undefined
        resolve()
      }
    })
  }
}
