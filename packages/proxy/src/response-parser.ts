import { headerValue } from './http-headers.ts'
import { HTTPParser } from './http-parser.ts'

/** What a parsed response head says. */
export interface ResponseHead {
  status: number
  reason: string
  /** `[name, value, ...]` as received. */
  rawHeaders: string[]
  /** The connection may carry another message after this one (HTTP/1.1 rules). */
  keepAlive: boolean
}

export interface ResponseHandler {
  /** A final head (2xx–5xx) or a 101; informational 1xx heads are skipped. */
  onHead(head: ResponseHead): void
  onBody(chunk: Buffer): void
  onComplete(): void
}

/** A response the parser refused (malformed, oversized head, ...). */
export class ResponseParseError extends Error {
  override readonly name = 'ResponseParseError'
  readonly code: string

  constructor(err: Error & { code?: string; reason?: string }) {
    super(`malformed response: ${err.reason ?? err.message}`)
    this.code = err.code ?? 'HPE_INVALID'
  }
}

/**
 * The Content-Length of a head llhttp accepted (so at most one, digits only, and no
 * Transfer-Encoding beside it), or undefined when it has none.
 */
function contentLength(rawHeaders: string[]): number | undefined {
  const value = headerValue(rawHeaders, 'content-length')
  const n = value == null ? Number.NaN : Number(value)
  return Number.isSafeInteger(n) ? n : undefined
}

/**
 * The responses of one connection (a mesh stream), one after another. Before each
 * request, `expect()` says which method it was (a HEAD response has no body) and where
 * its events go. `push()` returns what followed a 101 head (the other protocol's first
 * bytes), or undefined; it throws ResponseParseError.
 *
 * A Content-Length body does not go through llhttp: Node's binding hands each body
 * chunk over as a fresh copy, so a 100 MB answer cost 100 MB more of allocation and
 * copying (a quarter of what the client proxy allocated for it). The head says how long
 * the body is; its bytes are passed on as slices of what arrived, and the parser starts
 * afresh after them.
 */
export class ResponseParser {
  private readonly parser = new HTTPParser()
  private handler?: ResponseHandler
  private head = false
  private partialHeaders: string[] = []
  /** The final (non-interim) head of the current response was parsed. */
  private finalSeen = false
  /** A 101 was parsed: the rest of the connection is not HTTP. */
  upgraded = false
  /** Bytes of a response were seen since expect(). */
  started = false
  /** Body bytes of the current Content-Length response not yet seen (counted here). */
  private bodyLeft = 0

  constructor() {
    const p = this.parser
    p.initialize(HTTPParser.RESPONSE, {}, 0, HTTPParser.kLenientNone)
    p[HTTPParser.kOnMessageBegin] = () => {
      this.started = true
      // Trailers of the message before came through kOnHeaders too: not this head's.
      this.partialHeaders = []
    }
    p[HTTPParser.kOnHeaders] = (headers: string[]) => {
      // More than 32 headers arrive in parts before the head completes.
      for (const h of headers) this.partialHeaders.push(h)
    }
    p[HTTPParser.kOnHeadersComplete] = (
      _major: number,
      _minor: number,
      headers: string[] | undefined,
      _method: unknown,
      _url: unknown,
      status: number,
      reason: string,
      _upgrade: boolean,
      keepAlive: boolean,
    ): number => {
      let rawHeaders = headers ?? []
      if (this.partialHeaders.length > 0) {
        rawHeaders = [...this.partialHeaders, ...rawHeaders]
        this.partialHeaders = []
      }
      // 1xx other than 101: interim, no body, the final head follows. Not relayed (the
      // gateway's server answered the client's Expect itself).
      if (status >= 100 && status < 200 && status !== 101) return 1
      this.finalSeen = true
      if (status === 101) this.upgraded = true
      this.handler?.onHead({ status, reason, rawHeaders, keepAlive: keepAlive && !this.upgraded })
      if (this.upgraded) return 2 // no body; the rest is another protocol
      if (this.head) return 1 // a HEAD response has no body whatever it says
      if (status === 204 || status === 304) return 0 // llhttp knows these have none
      const length = contentLength(rawHeaders)
      if (length == null || length === 0) return 0
      // 2 stops llhttp right after this head, as for an upgrade; push() counts the body.
      this.bodyLeft = length
      return 2
    }
    p[HTTPParser.kOnBody] = (chunk: Buffer) => {
      this.handler?.onBody(chunk)
    }
    p[HTTPParser.kOnMessageComplete] = () => {
      // After a 101 nothing completes; a counted body completes in push().
      if (this.upgraded || this.bodyLeft > 0) return
      // An interim (1xx) message completes too: only a final one ends the exchange.
      if (this.finalSeen) this.complete()
    }
    p[HTTPParser.kOnExecute] = () => {}
    p[HTTPParser.kOnTimeout] = () => {}
  }

  /** The next response answers `method`; its events go to `handler`. */
  expect(method: string, handler: ResponseHandler): void {
    this.head = method === 'HEAD'
    this.handler = handler
    this.started = false
    this.finalSeen = false
  }

  /** Stops reporting to the current handler (its exchange was abandoned). */
  forget(): void {
    this.handler = undefined
  }

  push(data: Buffer): Buffer | undefined {
    let at = 0
    while (at < data.length) {
      if (this.bodyLeft > 0) {
        const n = Math.min(this.bodyLeft, data.length - at)
        this.bodyLeft -= n
        this.handler?.onBody(n === data.length ? data : data.subarray(at, at + n))
        at += n
        if (this.bodyLeft === 0) {
          // Stopped as for an upgrade, llhttp would take nothing more: a fresh start.
          this.parser.initialize(HTTPParser.RESPONSE, {}, 0, HTTPParser.kLenientNone)
          this.complete()
        }
        continue
      }
      const chunk = at === 0 ? data : data.subarray(at)
      const n = this.parser.execute(chunk)
      if (n instanceof Error) throw new ResponseParseError(n)
      if (this.upgraded) return chunk.subarray(n)
      if (this.bodyLeft === 0) return undefined // llhttp took all of it
      at += n // it stopped after a head whose body is counted here
    }
    return undefined
  }

  private complete(): void {
    const handler = this.handler
    this.handler = undefined
    this.finalSeen = false
    handler?.onComplete()
  }

  /** The connection ended: completes a response delimited by the close, or throws for one
   * cut short. */
  finish(): void {
    if (this.bodyLeft > 0) {
      throw new ResponseParseError(
        Object.assign(new Error(`the body ended ${this.bodyLeft} bytes short`), {
          code: 'HPE_INVALID_EOF_STATE',
        }),
      )
    }
    const err = this.parser.finish()
    if (err instanceof Error) throw new ResponseParseError(err)
  }

  close(): void {
    this.handler = undefined
    this.parser.close()
  }
}
