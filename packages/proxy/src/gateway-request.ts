import type { ProxyError } from './errors.ts'
import { headerValue } from './http-headers.ts'
import type { Framing } from './request-framing.ts'

/** Where a request's body goes as it arrives (the request's one consumer: RequestBody). */
export interface BodyConsumer {
  onData(chunk: Buffer): void
  onEnd(): void
  /** The client went away (or its body was malformed) before the body was complete. */
  onError(err: Error): void
}

/** A request head as llhttp parsed it. */
export interface RequestHead {
  method: string
  /** The request target as sent. */
  url: string
  httpVersionMajor: number
  httpVersionMinor: number
  /** `[name, value, ...]` as received. */
  rawHeaders: string[]
  /** HTTP/1.1 rules: the client may send another request on this connection. */
  keepAlive: boolean
  /** `Connection: upgrade` with `Upgrade` (or CONNECT). */
  upgrade: boolean
}

/**
 * One client request at the gateway: its head, its framing (or why it has none the
 * gateway trusts), and its body as a paused-until-asked source. Body bytes that arrive
 * while paused are kept (at most what the connection read before it stopped reading,
 * see client-connection.ts) and delivered in order on resume.
 */
export class GatewayRequest {
  readonly method: string
  readonly url: string
  readonly httpVersionMajor: number
  readonly httpVersionMinor: number
  readonly rawHeaders: string[]
  /** The client's address, as the socket saw it. */
  readonly remoteAddress: string
  /** How the body is delimited; undefined when the head was refused (`framingError`). */
  readonly framing?: Framing
  readonly framingError?: ProxyError
  /** Every body byte was received (or there is none). */
  complete = false
  /** The body was cut: the client went away or sent a malformed chunk. */
  destroyed = false
  /** Body bytes received and not yet taken (the connection reads less while they pile up). */
  queuedBytes = 0
  private consumer?: BodyConsumer
  private paused = true
  /** The answer is out without the rest of the body: it is read and dropped. */
  private discarding = false
  private queue: Buffer[] = []
  private readonly onFlow: () => void

  constructor(
    head: RequestHead,
    remoteAddress: string,
    framing: Framing | ProxyError,
    onFlow: () => void,
  ) {
    this.method = head.method
    this.url = head.url
    this.httpVersionMajor = head.httpVersionMajor
    this.httpVersionMinor = head.httpVersionMinor
    this.rawHeaders = head.rawHeaders
    this.remoteAddress = remoteAddress
    if ('kind' in framing) this.framing = framing
    else this.framingError = framing
    this.onFlow = onFlow
  }

  /** The value of header `name` (lower-case), the first if repeated. */
  header(name: string): string | undefined {
    return headerValue(this.rawHeaders, name)
  }

  /** Where the body goes, paused until resume(). */
  consume(consumer: BodyConsumer): void {
    this.consumer = consumer
  }

  pause(): void {
    this.paused = true
  }

  resume(): void {
    if (!this.paused) return
    this.paused = false
    while (!this.paused && this.queue.length > 0) {
      const chunk = this.queue.shift() as Buffer
      this.queuedBytes -= chunk.length
      this.consumer?.onData(chunk)
    }
    if (!this.paused) this.settle()
    this.onFlow()
  }

  /** From the connection: body bytes. */
  pushBody(chunk: Buffer): void {
    if (this.destroyed || this.discarding || chunk.length === 0) return
    if (!this.paused && this.queue.length === 0) {
      this.consumer?.onData(chunk)
      return
    }
    this.queue.push(chunk)
    this.queuedBytes += chunk.length
  }

  /** From the connection: the answer is out; the rest of the body goes nowhere. */
  discard(): void {
    this.discarding = true
    this.consumer = undefined
    this.queue = []
    this.queuedBytes = 0
    this.paused = false
  }

  /** From the connection: the body is complete. */
  endBody(): void {
    if (this.destroyed) return
    this.complete = true
    if (!this.paused) this.settle()
  }

  /** From the connection: the body will not complete. */
  fail(err: Error): void {
    if (this.complete || this.destroyed) return
    this.destroyed = true
    this.queue = []
    this.queuedBytes = 0
    this.consumer?.onError(err)
  }

  /** Delivers the end once every queued byte was taken. */
  private settle(): void {
    if (this.queue.length > 0 || this.consumer == null) return
    if (this.complete) {
      const consumer = this.consumer
      this.consumer = undefined
      consumer.onEnd()
    }
  }
}
