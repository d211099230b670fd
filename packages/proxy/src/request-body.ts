import { REPLAY_BUFFER_BYTES } from './constants.ts'
import type { BodyConsumer, GatewayRequest } from './gateway-request.ts'
import { type Framing, hasBody } from './request-framing.ts'

/** Where a body goes: an attempt's upstream (the mesh stream, framing the body). */
export interface BodyTarget {
  /** false: wait for 'drain'. */
  write(chunk: Buffer): boolean
  /** The body is complete. */
  end(): void
  /** The client's message failed: the attempt is aborted. */
  destroy(err: Error): void
  on(event: 'drain', listener: () => void): unknown
  off(event: 'drain', listener: () => void): unknown
}

/**
 * A client's request body, streamed into one upstream request at a time with
 * backpressure, keeping the first REPLAY_BUFFER_BYTES so a failed attempt can be
 * replayed on another instance. A body that outgrew the buffer cannot be replayed.
 */
export class RequestBody implements BodyConsumer {
  readonly present: boolean
  private readonly source: GatewayRequest
  private recorded: Buffer[] = []
  private recordedBytes = 0
  private overflowed = false
  private ended = false
  private target?: BodyTarget

  constructor(source: GatewayRequest, framing: Framing) {
    this.source = source
    this.present = hasBody(framing)
    if (this.present) source.consume(this)
  }

  /** Every byte read from the client so far is still held (or none was read). */
  get replayable(): boolean {
    return !this.overflowed
  }

  /** Sends the body (what was kept first, then the rest as it comes) into `target`. */
  sendTo(target: BodyTarget): void {
    this.detach()
    if (!this.present) {
      target.end()
      return
    }
    for (const chunk of this.recorded) target.write(chunk)
    if (this.ended) {
      target.end()
      return
    }
    if (this.source.destroyed) {
      target.destroy(new Error('the client went away'))
      return
    }
    this.target = target
    target.on('drain', this.onDrain)
    this.source.resume()
  }

  /** Stops feeding the current target (its attempt failed); the client is paused. */
  detach(): void {
    const target = this.target
    if (target == null) return
    this.target = undefined
    this.source.pause()
    target.off('drain', this.onDrain)
  }

  onData(chunk: Buffer): void {
    if (!this.overflowed) {
      if (this.recordedBytes + chunk.byteLength <= REPLAY_BUFFER_BYTES) {
        this.recorded.push(chunk)
        this.recordedBytes += chunk.byteLength
      } else {
        this.overflowed = true
        this.recorded = []
        this.recordedBytes = 0
      }
    }
    if (this.target?.write(chunk) === false) this.source.pause()
  }

  private readonly onDrain = (): void => {
    this.source.resume()
  }

  onEnd(): void {
    this.ended = true
    const target = this.target
    this.detach()
    target?.end()
  }

  /** The client's message failed: the attempt it feeds (if any) is aborted. */
  onError(err: Error): void {
    const target = this.target
    this.detach()
    target?.destroy(err)
  }
}
