import type { Duplex } from 'node:stream'
import type { ClientResponse } from './client-response.ts'
import { ERROR_HEADER, ProxyError } from './errors.ts'
import { endToEndHeaders, upgradeHeaders } from './http-headers.ts'
import { idleTimeoutFor, type MeshStream, type StreamUser } from './mesh-agent.ts'
import type { BodyTarget, RequestBody } from './request-body.ts'
import type { Framing } from './request-framing.ts'
import type { ResponseHead } from './response-parser.ts'
import { splice } from './splice.ts'

/** How one attempt ended. */
export type Outcome =
  | { kind: 'relayed' }
  | {
      kind: 'failed'
      /** Some of the request may have reached the service. */
      delivered: boolean
      error: ProxyError
      /** A reused stream ended before any byte of the answer: the service closed an idle
       * connection just as the request was written (then it saw nothing, or the method
       * decides, as for any lost connection). */
      stale?: boolean
    }

/** A client connection that asked for a protocol upgrade (Upgrade: websocket, ...). */
export interface UpgradeRequest {
  socket: Duplex
  /** Bytes the client sent after its request head (not parsed: an upgrade request's
   * body, if any, is among them). */
  head: Buffer
}

export interface ExchangeInit {
  stream: MeshStream
  method: string
  /** The request head as the instance gets it (request-head.ts). */
  head: Buffer
  body: RequestBody
  framing: Framing
  res: ClientResponse
  timeoutMs: number
  upgrade?: UpgradeRequest
  /** The response head arrived (before anything of it is sent to the client). */
  onResponse(head: ResponseHead): void
  /** The exchange is over; `reusable`: the stream may carry the next request. */
  onStreamDone(reusable: boolean): void
  /** Whether the libp2p connection to the instance is still open (a stream that ended
   * under an open connection was closed by the service, not lost with its instance). */
  connectionOpen(): boolean
}

/** Only proxies speak the error header: a service's own is dropped. */
const DROP_FROM_SERVICE = new Set([ERROR_HEADER])
const LAST_CHUNK = Buffer.from('0\r\n\r\n')
const CRLF = Buffer.from('\r\n')

/**
 * One request over one mesh stream: writes the head, streams the body (framed as the
 * client's), and follows the response with the stream's llhttp parser, relaying its head
 * and every chunk to the client as soon as they arrive (with backpressure both ways).
 * A 101 to an upgrade request splices the client's connection and the stream for the rest
 * of their lives. Resolves once the client's response is over, or with why the attempt
 * failed while nothing of the response was sent (the caller may retry).
 */
export function exchange(init: ExchangeInit): Promise<Outcome> {
  const { stream, res, body, upgrade } = init
  const { duplex, parser } = stream
  const reused = stream.requests > 0
  stream.requests++
  const { promise, resolve } = Promise.withResolvers<Outcome>()
  let requestSent = false
  let head: ResponseHead | undefined
  /** A head written to the client but not yet sent (it goes with the first body bytes). */
  let headPending = false
  let waitingDrain = false
  let over = false

  /** Ends this exchange's hold on the stream and the client (once). */
  const detach = (): boolean => {
    if (over) return false
    over = true
    clearTimeout(timer)
    stream.detach(user)
    res.off('close', onClientGone)
    res.off('drain', onClientDrain)
    body.detach()
    return true
  }
  const release = (reusable: boolean): void => {
    if (!reusable) parser.forget()
    else if (duplex.isPaused()) duplex.resume()
    init.onStreamDone(reusable)
  }
  const fail = (error: ProxyError, stale = false): void => {
    if (!detach()) return
    if (!duplex.destroyed) duplex.destroy()
    release(false)
    resolve({ kind: 'failed', delivered: true, error, ...(stale ? { stale } : {}) })
  }
  /**
   * The stream ended (`clean`: the instance ended it, as it does when its service closed
   * the connection) or failed. Before the answer, a failed attempt: a clean end under an
   * open connection is the service's doing (ERR_SERVICE_RESET), anything else the loss of
   * the instance. During the answer, the client's response is cut (its framing tells the
   * client it is incomplete).
   */
  const broken = (why: string, clean: boolean): void => {
    if (over) return
    if (head == null) {
      if (clean && init.connectionOpen())
        fail(new ProxyError('ERR_SERVICE_RESET', why), reused && !parser.started)
      else fail(new ProxyError('ERR_INSTANCE_UNREACHABLE', why))
      return
    }
    detach()
    res.destroy(new Error(`response cut: ${why}`))
    if (!duplex.destroyed) duplex.destroy()
    release(false)
    resolve({ kind: 'relayed' })
  }

  parser.expect(init.method, {
    onHead: (h) => {
      if (h.status === 101 && upgrade == null) {
        fail(new ProxyError('ERR_SERVICE_RESET', 'the service switched protocols unasked'))
        return
      }
      head = h
      clearTimeout(timer)
      stream.idleTimeoutMs = idleTimeoutFor(h.rawHeaders)
      init.onResponse(h)
      // A 101's head goes out raw once push() returned the bytes after it (onData).
      if (h.status === 101) return
      res.writeHead(h.status, h.reason, endToEndHeaders(h.rawHeaders, DROP_FROM_SERVICE))
      headPending = true
    },
    onBody: (chunk) => {
      headPending = false
      if (res.write(chunk) || waitingDrain) return
      // The client reads slower than the service writes: the stream waits (yamux stops
      // granting window, so the service's socket fills and the service waits too).
      waitingDrain = true
      duplex.pause()
      res.once('drain', onClientDrain)
    },
    onComplete: () => {
      // A stream that carried an upgrade request may hold bytes meant for the new protocol.
      const reusable = requestSent && head?.keepAlive === true && upgrade == null && !res.destroyed
      if (!detach()) return
      // Released now, not once the client took the last bytes: the stream is free.
      release(reusable)
      res.once('close', () => resolve({ kind: 'relayed' }))
      res.end()
    },
  })
  const onClientDrain = (): void => {
    waitingDrain = false
    duplex.resume()
  }

  const onData = (chunk: Buffer): void => {
    let rest: Buffer | undefined
    try {
      rest = parser.push(chunk)
    } catch (err) {
      if (head == null) fail(new ProxyError('ERR_SERVICE_RESET', (err as Error).message))
      else broken((err as Error).message, false)
      return
    }
    if (over) return
    if (rest != null && upgrade != null && head != null) {
      switchProtocols(head, rest, upgrade)
      return
    }
    // A head alone (server-sent events, a long poll) is not held until the first byte of
    // the body: the client gets it now. (A head that came with body bytes went with them.)
    if (headPending) {
      headPending = false
      res.flushHeaders()
    }
  }
  const onEnd = (): void => {
    try {
      parser.finish() // completes a response delimited by the connection's close
    } catch (err) {
      broken((err as Error).message, duplex.remoteEnded)
      return
    }
    // A FIN from the instance: its service hung up; an end because the overlay connection
    // closed under the stream: the instance is lost.
    broken('the service closed the connection before answering', duplex.remoteEnded)
  }
  const onClose = (): void => broken('the stream closed', false)
  const onError = (err: Error): void => broken(err.message, false)
  const onClientGone = (): void => {
    if (!detach()) return
    duplex.destroy()
    release(false)
    resolve({ kind: 'relayed' })
  }

  /** 101: the client's connection and the stream become one byte pipe for good. */
  const switchProtocols = (h: ResponseHead, rest: Buffer, up: UpgradeRequest): void => {
    detach()
    parser.forget()
    // The response is over as far as the gateway is concerned (its metrics, its count).
    res.switchProtocols()
    const headers = upgradeHeaders(h.rawHeaders, DROP_FROM_SERVICE)
    let text = `HTTP/1.1 101 ${h.reason || 'Switching Protocols'}\r\n`
    for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`
    up.socket.write(`${text}\r\n`, 'latin1')
    if (rest.length > 0) up.socket.write(rest)
    splice(up.socket, duplex)
    resolve({ kind: 'relayed' })
  }

  const timer = setTimeout(() => {
    fail(new ProxyError('ERR_UPSTREAM_TIMEOUT', `no answer within ${init.timeoutMs} ms`))
  }, init.timeoutMs)
  const user: StreamUser = { onData, onEnd, onClose, onError }
  stream.attach(user)
  res.once('close', onClientGone)

  duplex.write(init.head)
  // What the client sent after an upgrade request's head belongs to it, in order.
  if (upgrade != null && upgrade.head.length > 0) duplex.write(upgrade.head)
  body.sendTo(
    new StreamBodyTarget(duplex, init.framing.kind === 'chunked', () => {
      requestSent = true
    }),
  )
  return promise
}

/** The request body into the stream, re-framed as the client framed it (chunked stays
 * chunked: llhttp hands over the decoded chunks). */
class StreamBodyTarget implements BodyTarget {
  private readonly duplex: Duplex
  private readonly chunked: boolean
  private readonly onEnd: () => void

  constructor(duplex: Duplex, chunked: boolean, onEnd: () => void) {
    this.duplex = duplex
    this.chunked = chunked
    this.onEnd = onEnd
  }

  write(chunk: Buffer): boolean {
    if (chunk.length === 0) return true
    if (!this.chunked) return this.duplex.write(chunk)
    this.duplex.cork()
    this.duplex.write(`${chunk.length.toString(16)}\r\n`, 'latin1')
    this.duplex.write(chunk)
    const more = this.duplex.write(CRLF)
    this.duplex.uncork()
    return more
  }

  end(): void {
    if (this.chunked) this.duplex.write(LAST_CHUNK)
    this.onEnd()
  }

  destroy(err: Error): void {
    this.duplex.destroy(err)
  }

  on(event: 'drain', listener: () => void): this {
    this.duplex.on(event, listener)
    return this
  }

  off(event: 'drain', listener: () => void): this {
    this.duplex.off(event, listener)
    return this
  }
}
