import { EventEmitter } from 'node:events'
import type { Socket } from 'node:net'
import { http } from '@mtc/p2pnode'
import { CLIENT_KEEP_ALIVE_TIMEOUT_MS } from './constants.ts'

/** What a response tells the connection it is written on. */
export interface ResponseOwner {
  readonly socket: Socket
  /** The last byte of this response was handed to the socket. */
  responseEnded(res: ClientResponse): void
  /** The response is cut: the client must not take what it got for a whole answer. */
  responseCut(res: ClientResponse): void
  /** The client's connection becomes a byte pipe (after a 101); the connection lets go. */
  release(): Socket
}

const LAST_CHUNK = Buffer.from('0\r\n\r\n')
const EMPTY = Buffer.alloc(0)
const KEEP_ALIVE = `Connection: keep-alive\r\nKeep-Alive: timeout=${CLIENT_KEEP_ALIVE_TIMEOUT_MS / 1000}\r\n`

let dateSecond = 0
let dateText = ''
/** The Date header's value, made once a second. */
function httpDate(): string {
  const now = Date.now()
  const second = Math.floor(now / 1000)
  if (second !== dateSecond) {
    dateSecond = second
    dateText = new Date(now).toUTCString()
  }
  return dateText
}

/**
 * The answer to one client request, written straight onto the client's socket: the head
 * (with the framing this hop chooses: the service's Content-Length kept, chunked for an
 * HTTP/1.1 client otherwise, the connection's close for an HTTP/1.0 one), then the body as
 * it comes, with the socket's backpressure ('drain'). The head waits for the first body
 * bytes (one write for both) unless flushed. Emits 'close' once, when the response is over:
 * written out, cut, or its client gone.
 */
export class ClientResponse extends EventEmitter {
  statusCode = 200
  headersSent = false
  /** The connection is closed after this response. */
  shouldKeepAlive: boolean
  /** Over: ended, cut or the client gone (nothing more is written). */
  destroyed = false
  private finished = false
  private readonly owner: ResponseOwner
  private readonly head: boolean
  private readonly http10: boolean
  private pendingHead?: string
  private chunked = false
  /** HEAD, 1xx, 204, 304: whatever body is written is not sent. */
  private bodiless = false

  constructor(owner: ResponseOwner, method: string, http10: boolean, keepAlive: boolean) {
    super()
    this.owner = owner
    this.head = method === 'HEAD'
    this.http10 = http10
    this.shouldKeepAlive = keepAlive
  }

  /** `headers`: `[name, value, ...]`, already free of hop-by-hop fields. */
  writeHead(status: number, reason: string | undefined, headers: string[]): void {
    if (this.headersSent || this.destroyed) return
    this.statusCode = status
    this.bodiless = this.head || status === 204 || status === 304 || status < 200
    let text = `HTTP/1.1 ${status} ${reason || http.STATUS_CODES[status] || 'Unknown'}\r\n`
    let length = false
    let date = false
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i]
      if (name.length === 14 && name.toLowerCase() === 'content-length') length = true
      else if (name.length === 4 && name.toLowerCase() === 'date') date = true
      text += `${name}: ${headers[i + 1]}\r\n`
    }
    if (!date) text += `Date: ${httpDate()}\r\n`
    if (!this.bodiless && !length) {
      // No length: chunks for HTTP/1.1, the connection's end for HTTP/1.0.
      if (this.http10) this.shouldKeepAlive = false
      else {
        this.chunked = true
        text += 'Transfer-Encoding: chunked\r\n'
      }
    }
    text += this.shouldKeepAlive ? KEEP_ALIVE : 'Connection: close\r\n'
    this.pendingHead = `${text}\r\n`
    this.headersSent = true
  }

  /** Sends the head now, before any body byte (server-sent events, long polls). */
  flushHeaders(): void {
    if (this.pendingHead == null || this.destroyed) return
    const head = this.pendingHead
    this.pendingHead = undefined
    this.owner.socket.write(head, 'latin1')
  }

  /** false: wait for 'drain' before writing more. */
  write(chunk: Buffer): boolean {
    if (this.destroyed || this.finished) return true
    const socket = this.owner.socket
    if (this.bodiless || chunk.length === 0) {
      this.flushHeaders()
      return !socket.writableNeedDrain
    }
    socket.cork()
    if (this.pendingHead != null) {
      socket.write(this.pendingHead, 'latin1')
      this.pendingHead = undefined
    }
    if (this.chunked) socket.write(`${chunk.length.toString(16)}\r\n`, 'latin1')
    let more = socket.write(chunk)
    if (this.chunked) more = socket.write('\r\n', 'latin1')
    socket.uncork()
    return more
  }

  /** Ends the response (`body`: all of it, for an answer made here). 'close' follows once
   * its last byte was handed to the kernel. */
  end(body?: string): void {
    if (this.destroyed || this.finished) return
    const socket = this.owner.socket
    socket.cork()
    if (body != null && body.length > 0) this.write(Buffer.from(body))
    this.finished = true
    if (this.pendingHead != null) {
      socket.write(this.pendingHead, 'latin1')
      this.pendingHead = undefined
    }
    if (this.chunked) socket.write(LAST_CHUNK)
    socket.uncork()
    this.owner.responseEnded(this)
    // Written out already (the usual case): over now, without a write of nothing to wait on
    // (a system call per request).
    if (socket.writableLength === 0 || socket.destroyed) this.close()
    else socket.write(EMPTY, () => this.close())
  }

  /** Cuts the response (and so the client's connection). */
  destroy(_err?: Error): void {
    if (this.destroyed) return
    this.owner.responseCut(this)
    this.close()
  }

  /** After a 101: the client's connection, now the client's byte pipe; this response is
   * over as far as the gateway is concerned. */
  switchProtocols(): Socket {
    this.statusCode = 101
    this.finished = true
    const socket = this.owner.release()
    this.close()
    return socket
  }

  /** From the connection: the client is gone (or the response over). */
  close(): void {
    if (this.destroyed) return
    this.destroyed = true
    this.emit('close')
  }
}
