import { ERROR_HEADER } from './errors.ts'
import type { GatewayRequest } from './gateway-request.ts'
import { type Framing, framingHeaders } from './request-framing.ts'

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1, plus the de-facto Keep-Alive and Proxy-*):
 * they describe one connection, so a proxy drops them and any header the Connection
 * header names, in both directions.
 */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
])

function isHopByHop(lowerName: string, named: Set<string>): boolean {
  return HOP_BY_HOP.has(lowerName) || lowerName.startsWith('proxy-') || named.has(lowerName)
}

/** Header names listed in the Connection header(s), lower-cased. */
function connectionTokens(raw: string[]): Set<string> {
  const named = new Set<string>()
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].toLowerCase() !== 'connection') continue
    for (const token of raw[i + 1].split(',')) {
      const t = token.trim().toLowerCase()
      if (t !== '') named.add(t)
    }
  }
  return named
}

/**
 * The end-to-end headers of a message as a flat `[name, value, ...]` list (names keep
 * their case, repeated headers stay repeated), minus hop-by-hop headers and `drop`.
 */
export function endToEndHeaders(raw: string[], drop: ReadonlySet<string> = new Set()): string[] {
  const named = connectionTokens(raw)
  const out: string[] = []
  for (let i = 0; i < raw.length; i += 2) {
    const lower = raw[i].toLowerCase()
    if (isHopByHop(lower, named) || drop.has(lower)) continue
    out.push(raw[i], raw[i + 1])
  }
  return out
}

/** The value of header `name` (lower-case) in a flat list, the first if repeated. */
export function headerValue(raw: string[], name: string): string | undefined {
  for (let i = 0; i < raw.length; i += 2) if (raw[i].toLowerCase() === name) return raw[i + 1]
  return undefined
}

/**
 * The headers of a message that switches protocols (an upgrade request, or its 101):
 * end-to-end headers minus `drop`, plus `Connection: Upgrade` and its `Upgrade`, which
 * are hop-by-hop but must reach the next hop for the switch to happen there too.
 */
export function upgradeHeaders(raw: string[], drop: ReadonlySet<string> = new Set()): string[] {
  const out = endToEndHeaders(raw, drop)
  const upgrade = headerValue(raw, 'upgrade')
  if (upgrade != null) out.push('Connection', 'Upgrade', 'Upgrade', upgrade)
  return out
}

/** The client address as Forwarded wants it (`for=`): IPv6 quoted in brackets. */
function forwardedNode(ip: string): string {
  if (ip === '') return 'unknown'
  return ip.includes(':') ? `"[${ip}]"` : ip
}

/** The framing of a forwarded request is the proxy's own (see requestFraming): whatever
 * the headers said, it is written from what was parsed. */
const GATEWAY_DROP = new Set(['host', 'content-length', ERROR_HEADER])

/**
 * The headers a gateway sends to an instance for a client request: end-to-end headers,
 * `Host: <service>` (the service is the virtual host on the mesh), the original host
 * in X-Forwarded-Host and Forwarded, and the client appended to X-Forwarded-For and
 * Forwarded. A request body keeps its framing (`framing`, decided before any header was
 * dropped): a chunked body goes on chunked, a length stays that length.
 */
export function gatewayRequestHeaders(
  req: GatewayRequest,
  service: string,
  framing: Framing,
): string[] {
  const headers = endToEndHeaders(req.rawHeaders, GATEWAY_DROP)
  const client = req.remoteAddress
  // An IPv4 client of a dual-stack socket, as itself.
  const clientIp = client.startsWith('::ffff:') ? client.slice(7) : client
  const host = headerValue(req.rawHeaders, 'host')
  let xff: string | undefined
  let forwarded: string | undefined
  const rest: string[] = []
  for (let i = 0; i < headers.length; i += 2) {
    const lower = headers[i].toLowerCase()
    if (lower === 'x-forwarded-for')
      xff = xff == null ? headers[i + 1] : `${xff}, ${headers[i + 1]}`
    else if (lower === 'forwarded')
      forwarded = forwarded == null ? headers[i + 1] : `${forwarded}, ${headers[i + 1]}`
    else rest.push(headers[i], headers[i + 1])
  }
  const element = [
    `for=${forwardedNode(clientIp)}`,
    ...(host != null ? [`host="${host.replace(/["\\]/g, '')}"`] : []),
    'proto=http',
  ].join(';')
  rest.push('Host', service)
  rest.push('X-Forwarded-For', xff != null ? `${xff}, ${clientIp}` : clientIp)
  rest.push('Forwarded', forwarded != null ? `${forwarded}, ${element}` : element)
  if (host != null && headerValue(req.rawHeaders, 'x-forwarded-host') == null)
    rest.push('X-Forwarded-Host', host)
  if (headerValue(req.rawHeaders, 'x-forwarded-proto') == null)
    rest.push('X-Forwarded-Proto', 'http')
  rest.push(...framingHeaders(framing))
  return rest
}
