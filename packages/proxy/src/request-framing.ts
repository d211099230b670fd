import { ProxyError } from './errors.ts'
import type { RequestHead } from './gateway-request.ts'

/** How a request's body is delimited (RFC 9112 §6): decided once, from what was parsed. */
export type Framing = { kind: 'none' } | { kind: 'length'; length: number } | { kind: 'chunked' }

/**
 * Headers that say where a message ends or where it goes. Listing one in Connection
 * would make it hop-by-hop, so one hop would frame or route the message by it and the
 * next without it: the request-smuggling recipe. Such a request is refused.
 */
const FRAMING_HEADERS = new Set(['content-length', 'transfer-encoding', 'host'])

const DIGITS = /^[0-9]+$/

function bad(detail: string): ProxyError {
  return new ProxyError('ERR_BAD_FRAMING', detail)
}

/**
 * The framing of a request llhttp (strict) accepted, or ERR_BAD_FRAMING
 * for what is still ambiguous. llhttp already refuses Content-Length with
 * Transfer-Encoding, repeated or malformed lengths, unknown codings without a final
 * chunked, obs-fold and bare LF; this adds RFC 9112's remaining rules (§6.1, §6.3, §3.2):
 * a transfer coding other than exactly `chunked` (a coding we would not decode),
 * Transfer-Encoding in HTTP/1.0, more than one Host, and a framing header named in
 * Connection. Checked again here rather than trusted, since the instance side applies
 * the same rules to what arrives from the mesh.
 */
export function requestFraming(
  req: Pick<RequestHead, 'rawHeaders' | 'httpVersionMajor' | 'httpVersionMinor'>,
): Framing {
  const raw = req.rawHeaders
  const lengths: string[] = []
  const codings: string[] = []
  let hosts = 0
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase()
    if (name === 'content-length') lengths.push(raw[i + 1].trim())
    else if (name === 'transfer-encoding') {
      for (const c of raw[i + 1].split(',')) codings.push(c.trim().toLowerCase())
    } else if (name === 'host') hosts++
    else if (name === 'connection') {
      for (const token of raw[i + 1].split(',')) {
        const t = token.trim().toLowerCase()
        if (FRAMING_HEADERS.has(t)) throw bad(`Connection names ${t}`)
      }
    }
  }
  if (hosts > 1) throw bad('more than one Host')
  if (codings.length > 0) {
    if (lengths.length > 0) throw bad('both Content-Length and Transfer-Encoding')
    if (req.httpVersionMajor === 1 && req.httpVersionMinor === 0)
      throw bad('Transfer-Encoding in an HTTP/1.0 request')
    if (codings.length !== 1 || codings[0] !== 'chunked')
      throw bad(`Transfer-Encoding "${codings.join(', ')}" (only chunked is supported)`)
    return { kind: 'chunked' }
  }
  if (lengths.length === 0) return { kind: 'none' }
  if (lengths.length > 1 || !DIGITS.test(lengths[0])) throw bad('bad Content-Length')
  const length = Number(lengths[0])
  if (!Number.isSafeInteger(length)) throw bad('bad Content-Length')
  return { kind: 'length', length }
}

/** Whether a message so framed has body bytes to forward. */
export function hasBody(framing: Framing): boolean {
  return framing.kind === 'chunked' || (framing.kind === 'length' && framing.length > 0)
}

/** The framing headers for a message of `framing`, as the next hop must see them. */
export function framingHeaders(framing: Framing): string[] {
  if (framing.kind === 'length') return ['Content-Length', String(framing.length)]
  if (framing.kind === 'chunked') return ['Transfer-Encoding', 'chunked']
  return []
}
