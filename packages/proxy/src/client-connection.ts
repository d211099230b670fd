import type { Socket } from 'node:net'
import { ClientResponse, type ResponseOwner } from './client-response.ts'
import { CLIENT_IDLE_TIMEOUT_MS, CLIENT_READ_AHEAD_BYTES } from './constants.ts'
import { ProxyError, type ProxyErrorCode, rawErrorResponse } from './errors.ts'
import { GatewayRequest, type RequestHead } from './gateway-request.ts'
import { HTTPParser, type LlhttpError, type LlhttpParser, METHODS } from './http-parser.ts'
import type { UpgradeRequest } from './mesh-exchange.ts'
import { type Framing, requestFraming } from './request-framing.ts'

/** What a client connection hands to the gateway. */
export interface ConnectionHandler {
  /** A request: answer it on `res`. `upgrade`: it asks to switch protocols. */
  request(req: GatewayRequest, res: ClientResponse, upgrade?: UpgradeRequest): void
  /** Bytes that are not a request, a head too large or too slow: answered with `code`
   * here, then the connection is closed. */
  clientError(code: ProxyErrorCode, detail: string): void
  /** The connection is gone (or handed over as a byte pipe). */
  closed(conn: ClientConnection): void
}

/** Puts a fresh parser in the state of a chunked body (see primeChunked). */
const CHUNKED_HEAD = Buffer.from('POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n')
const CONTINUE = /(?:^|\W)100-continue(?:$|\W)/i

interface Current {
  req: GatewayRequest
  res: ClientResponse
  dispatched: boolean
  upgrade: boolean
  /** The response was written out to its end. */
  answered: boolean
}

/**
 * One client's HTTP/1.1 connection to the gateway, read with llhttp and no HTTP server
 * around it: request heads are parsed (llhttp stops after each, see onHeadersComplete),
 * a Content-Length body is counted through unparsed, a chunked one decoded by llhttp.
 * One request at a time: bytes pipelined behind it wait (up to CLIENT_READ_AHEAD_BYTES,
 * then the socket is not read) until its answer is out. A body the answer did not need
 * is read and dropped, so the connection can go on; a request whose framing was refused,
 * `Connection: close` or an HTTP/1.0 client without keep-alive end the connection after
 * the answer.
 */
export class ClientConnection implements ResponseOwner {
  readonly socket: Socket
  /** When the head being read (or awaited on a new connection) began; undefined between
   * requests on a kept-alive connection. */
  headSince: number | undefined = performance.now()
  /** When the connection last became idle between requests. */
  idleSince = performance.now()
  private readonly handler: ConnectionHandler
  private readonly maxHeaderBytes: number
  private readonly remoteAddress: string
  private readonly parser: LlhttpParser = new HTTPParser()
  private current?: Current
  /** A head llhttp parsed behind the current request (after its chunked body). */
  private next?: RequestHead
  /** Bytes read and not yet parsed, oldest first. */
  private held: Buffer[] = []
  private heldBytes = 0
  /** Content-Length body bytes of the current request still to come (counted here). */
  private bodyLeft = 0
  /** llhttp is decoding the current request's chunked body. */
  private chunkedBody = false
  private partialHeaders: string[] = []
  private partialUrl = ''
  /** Bytes of a head are in llhttp. */
  private inHead = false
  /** llhttp is being put in a chunked body's state: its callbacks are not a request. */
  private priming = false
  /** The current request's chunked body starts with the next bytes parsed. */
  private needsPrime = false
  private pumping = false
  /** No request after the current one is read. */
  private noMore = false
  private closed = false
  private released = false

  constructor(socket: Socket, handler: ConnectionHandler, maxHeaderBytes: number) {
    this.socket = socket
    this.handler = handler
    this.maxHeaderBytes = maxHeaderBytes
    this.remoteAddress = socket.remoteAddress ?? ''
    this.initParser()
    socket.setNoDelay(true)
    socket.setTimeout(CLIENT_IDLE_TIMEOUT_MS)
    for (const [event, listener] of this.socketListeners()) socket.on(event, listener as never)
  }

  /** What this connection listens to on its socket, from its start until it lets go. */
  private socketListeners(): Array<[string, (...args: never[]) => void]> {
    return [
      ['data', this.onData],
      ['end', this.onEnd],
      ['close', this.onClose],
      ['drain', this.onDrain],
      ['timeout', this.onTimeout],
      ['error', this.onError],
    ]
  }

  /** Applies the head and keep-alive timeouts (called every so often by the gateway). */
  checkTimeouts(now: number, headersTimeoutMs: number, keepAliveTimeoutMs: number): void {
    if (this.closed || this.released || this.current != null) return
    if (this.headSince != null) {
      if (now - this.headSince > headersTimeoutMs) this.answerRaw('ERR_REQUEST_TIMEOUT', 'head')
    } else if (now - this.idleSince > keepAliveTimeoutMs) this.socket.destroy()
  }

  /** Closes the connection now unless a request is under way or its head is arriving
   * (then it is answered 503, as the gateway stops). */
  closeIfIdle(): void {
    if (this.current == null && !this.inHead && this.heldBytes === 0) this.socket.destroy()
  }

  private initParser(): void {
    const p = this.parser
    p.initialize(HTTPParser.REQUEST, {}, this.maxHeaderBytes, HTTPParser.kLenientNone)
    p[HTTPParser.kOnMessageBegin] = this.onMessageBegin
    p[HTTPParser.kOnHeaders] = this.onHeaders
    p[HTTPParser.kOnHeadersComplete] = this.onHeadersComplete
    p[HTTPParser.kOnBody] = this.onBody
    p[HTTPParser.kOnMessageComplete] = this.onMessageComplete
    p[HTTPParser.kOnExecute] = () => {}
    p[HTTPParser.kOnTimeout] = () => {}
  }

  private readonly onMessageBegin = (): void => {
    if (this.priming) return
    // Trailers of a chunked body came through onHeaders too: not this head's.
    this.partialHeaders = []
    this.partialUrl = ''
    this.inHead = true
    if (this.current == null) this.headSince ??= performance.now()
  }

  private readonly onHeaders = (headers: string[], url: string): void => {
    // More than 32 headers arrive in parts before the head completes.
    for (const h of headers) this.partialHeaders.push(h)
    this.partialUrl += url
  }

  private readonly onHeadersComplete = (
    major: number,
    minor: number,
    headers: string[] | undefined,
    method: number,
    url: string | undefined,
    _status: unknown,
    _reason: unknown,
    upgrade: boolean,
    keepAlive: boolean,
  ): number => {
    if (this.priming) return 0
    this.inHead = false
    let rawHeaders = headers ?? []
    if (this.partialHeaders.length > 0) {
      rawHeaders = [...this.partialHeaders, ...rawHeaders]
      this.partialHeaders = []
    }
    const head: RequestHead = {
      method: METHODS[method] ?? 'GET',
      url: url || this.partialUrl,
      httpVersionMajor: major,
      httpVersionMinor: minor,
      rawHeaders,
      keepAlive,
      upgrade,
    }
    if (this.current == null) this.begin(head)
    else this.next = head // behind a chunked body whose answer is under way
    // 2: llhttp stops right after the head, as for an upgrade; the body is taken here.
    return 2
  }

  private readonly onBody = (chunk: Buffer): void => {
    if (this.chunkedBody) this.current?.req.pushBody(chunk)
  }

  private readonly onMessageComplete = (): void => {
    // A head (llhttp took it as bodiless) completes too: only a chunked body ends here.
    if (!this.chunkedBody) return
    this.chunkedBody = false
    this.bodyDone()
  }

  /** A request head: the request, its framing, and how its body is read. */
  private begin(head: RequestHead): void {
    this.headSince = undefined
    let framing: Framing | ProxyError
    try {
      framing = requestFraming(head)
    } catch (err) {
      framing = err as ProxyError
    }
    // The last request of this connection: the client says so, it switches protocols, or
    // where its message ends is unknown.
    if (!head.keepAlive || head.upgrade || !('kind' in framing)) this.noMore = true
    const req = new GatewayRequest(head, this.remoteAddress, framing, this.onFlow)
    const http10 = head.httpVersionMajor === 1 && head.httpVersionMinor === 0
    const res = new ClientResponse(this, head.method, http10, !this.noMore)
    this.current = { req, res, dispatched: false, upgrade: head.upgrade, answered: false }
    // An upgrade request's bytes after its head go on raw (dispatch): no body is read.
    if (!('kind' in framing) || framing.kind === 'none' || head.upgrade) req.endBody()
    else if (framing.kind === 'length') {
      this.bodyLeft = framing.length
      if (framing.length === 0) req.endBody()
    } else this.needsPrime = true
  }

  /**
   * llhttp stopped after the head (onHeadersComplete returned 2) and took the message as
   * bodiless: a fresh parser fed a chunked head of ours goes on with the body's chunks.
   */
  private primeChunked(): void {
    this.parser.initialize(HTTPParser.REQUEST, {}, this.maxHeaderBytes, HTTPParser.kLenientNone)
    this.priming = true
    this.parser.execute(CHUNKED_HEAD)
    this.priming = false
    this.chunkedBody = true
  }

  private readonly onData = (chunk: Buffer): void => {
    const cur = this.current
    // After the last request's body, nothing more is read: dropped.
    if (this.noMore && (cur == null || cur.req.complete || cur.req.destroyed)) return
    this.held.push(chunk)
    this.heldBytes += chunk.length
    this.pump()
  }

  /** Parses held bytes and starts requests while it can. */
  private pump(): void {
    if (this.pumping || this.closed || this.released) return
    this.pumping = true
    try {
      for (;;) {
        const cur = this.current
        if (cur != null && !cur.dispatched) {
          cur.dispatched = true
          this.dispatch(cur)
          continue
        }
        if (cur == null && this.next != null) {
          // The answer before it is out: the next request (parsed earlier) goes now.
          if (this.socket.writableNeedDrain) break
          const head = this.next
          this.next = undefined
          this.begin(head)
          continue
        }
        if (this.closed || this.released || cur?.upgrade === true) break
        const reading = cur != null && !cur.req.complete
        if (!reading && (this.noMore || cur != null)) break
        // The answer before is still being taken by the client: the next one waits.
        if (cur == null && this.socket.writableNeedDrain) break
        const data = this.held.shift()
        if (data == null) break
        this.heldBytes -= data.length
        const rest = this.parse(data)
        if (rest != null && rest.length > 0 && !this.closed) {
          this.held.unshift(rest)
          this.heldBytes += rest.length
        }
      }
    } finally {
      this.pumping = false
    }
    this.updateReading()
  }

  /** Feeds `data` to the request being read; returns what it did not take. */
  private parse(data: Buffer): Buffer | undefined {
    if (this.bodyLeft > 0) {
      const n = Math.min(this.bodyLeft, data.length)
      this.bodyLeft -= n
      this.current?.req.pushBody(n === data.length ? data : data.subarray(0, n))
      if (this.bodyLeft === 0) this.bodyDone()
      return n === data.length ? undefined : data.subarray(n)
    }
    if (this.needsPrime) {
      // Not from onHeadersComplete: llhttp is not re-entered while it executes.
      this.needsPrime = false
      this.primeChunked()
    }
    const n = this.parser.execute(data)
    if (typeof n !== 'number') {
      this.parseError(n)
      return undefined
    }
    return n < data.length ? data.subarray(n) : undefined
  }

  private dispatch(cur: Current): void {
    let upgrade: UpgradeRequest | undefined
    if (cur.upgrade && cur.req.method !== 'CONNECT') {
      // What followed the head is the client's, for the new protocol (or the service).
      const head = this.held.length === 1 ? this.held[0] : Buffer.concat(this.held)
      this.held = []
      this.heldBytes = 0
      upgrade = { socket: this.socket, head }
    }
    if (cur.req.httpVersionMajor === 1 && cur.req.httpVersionMinor === 1) {
      const expect = cur.req.header('expect')
      if (expect != null && CONTINUE.test(expect) && !cur.req.complete)
        this.socket.write('HTTP/1.1 100 Continue\r\n\r\n', 'latin1')
    }
    this.handler.request(cur.req, cur.res, upgrade)
  }

  private bodyDone(): void {
    const cur = this.current
    if (cur == null) return
    cur.req.endBody()
    if (cur.answered) this.finishRequest()
  }

  /** The request's body arrived or was taken: more may be read. */
  private readonly onFlow = (): void => {
    if (!this.pumping) this.pump()
  }

  /** ResponseOwner: the answer's last byte was handed to the socket. */
  responseEnded(res: ClientResponse): void {
    const cur = this.current
    if (cur == null || cur.res !== res) return
    cur.answered = true
    if (!res.shouldKeepAlive) this.noMore = true
    // A body the answer did not wait for is read through (and dropped), unless the
    // connection ends anyway.
    if (cur.req.complete || this.noMore) this.finishRequest()
    else {
      cur.req.discard()
      this.pump()
    }
  }

  /** ResponseOwner: the answer was cut. */
  responseCut(res: ClientResponse): void {
    if (this.current?.res === res) this.socket.destroy()
  }

  /** ResponseOwner: after a 101 the socket is the client's byte pipe; this lets go. */
  release(): Socket {
    this.released = true
    this.current = undefined
    const socket = this.socket
    for (const [event, listener] of this.socketListeners()) socket.off(event, listener as never)
    socket.setTimeout(0)
    this.parser.close()
    this.handler.closed(this)
    return socket
  }

  private finishRequest(): void {
    this.current = undefined
    if (this.noMore) {
      this.dropUnread()
      this.socket.end()
      return
    }
    this.idleSince = performance.now()
    this.pump()
  }

  /**
   * The client half-closed: as with Node's server, a client that ends its side is gone.
   * A request under way is abandoned (its stream is not reused), requests pipelined
   * behind it are not answered, and a head cut short gets 400.
   */
  private endOfInput(): void {
    if (this.socket.writableEnded) return // answered already
    this.noMore = true
    this.dropUnread()
    const cur = this.current
    if (cur != null) {
      this.current = undefined
      cur.req.fail(new Error('the client went away'))
      cur.res.close()
    } else if (this.inHead) {
      this.answerRaw('ERR_BAD_REQUEST', 'the head was cut short')
      return
    }
    if (!this.socket.writableEnded) this.socket.end()
  }

  /** Forgets what the client sent after the current request (nothing more is served). */
  private dropUnread(): void {
    this.held = []
    this.heldBytes = 0
    this.next = undefined
  }

  private parseError(err: LlhttpError): void {
    const detail = `${err.code ?? 'HPE_INVALID'}: ${err.reason ?? err.message}`
    this.dropUnread()
    const cur = this.current
    if (cur != null) {
      this.noMore = true
      if (!cur.req.complete) {
        // A malformed chunk: the request is cut, and its answer with it.
        cur.req.fail(new Error(`malformed request body: ${detail}`))
        this.socket.destroy()
      } else cur.res.shouldKeepAlive = false // bytes after it: its answer is the last
      return
    }
    this.answerRaw(
      err.code === 'HPE_HEADER_OVERFLOW' ? 'ERR_HEADERS_TOO_LARGE' : 'ERR_BAD_REQUEST',
      detail,
    )
  }

  /** An answer made here, then the end of the connection. */
  private answerRaw(code: ProxyErrorCode, detail: string): void {
    this.noMore = true
    this.inHead = false
    this.headSince = undefined
    this.handler.clientError(code, detail)
    if (!this.socket.writable) {
      this.socket.destroy()
      return
    }
    this.socket.end(rawErrorResponse(new ProxyError(code)))
  }

  /** Reads while little is waiting to be taken; stops otherwise. */
  private updateReading(): void {
    if (this.closed || this.released) return
    const cur = this.current
    const waiting = this.heldBytes + (cur?.req.queuedBytes ?? 0)
    const read = cur?.upgrade !== true && waiting < CLIENT_READ_AHEAD_BYTES
    if (read && this.socket.isPaused()) this.socket.resume()
    else if (!read && !this.socket.isPaused()) this.socket.pause()
  }

  private readonly onEnd = (): void => {
    this.endOfInput()
  }

  private readonly onDrain = (): void => {
    this.current?.res.emit('drain')
    if (this.current == null) this.pump()
  }

  private readonly onTimeout = (): void => {
    this.socket.destroy()
  }

  private readonly onError = (): void => {}

  private readonly onClose = (): void => {
    if (this.closed) return
    this.closed = true
    const cur = this.current
    this.current = undefined
    if (cur != null) {
      cur.req.fail(new Error('the client went away'))
      cur.res.close()
    }
    this.parser.close()
    this.handler.closed(this)
  }
}
