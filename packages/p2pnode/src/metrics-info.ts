import type { Libp2p, PeerId } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { PROTOCOL_PREFIX } from './constants.ts'
import { expectReply, handleRpc, openRpc, ProtocolViolationError } from './rpc.ts'

/**
 * Every daemon with a metrics server answers "where are your metrics" on this protocol, so
 * the bootstrap can list it for Prometheus' HTTP service discovery without any config.
 */
export const METRICS_INFO_PROTOCOL = `/${PROTOCOL_PREFIX}/metrics-info/1.0.0`
/** The answer is a tiny JSON document: a port and maybe a host. */
export const MAX_METRICS_INFO_BYTES = 1024
/** An answer not there within this has failed. */
export const METRICS_INFO_TIMEOUT_MS = 5_000
/** Longest host (a DNS name is at most 253 characters). */
const MAX_HOST_CHARS = 253

/**
 * Where a daemon's metrics are: `port` on `host`, or on the address the asking peer sees
 * this daemon connect from when `host` is absent (the server listens on every interface).
 */
export interface MetricsInfo {
  port: number
  host?: string
}

/** The host worth telling peers about: none for a wildcard bind, else the bound host. */
export function advertisedMetricsHost(boundHost: string): string | undefined {
  return boundHost === '0.0.0.0' || boundHost === '::' || boundHost === '' ? undefined : boundHost
}

/** Answers METRICS_INFO_PROTOCOL with `info` (no request: the dialer just reads). */
export async function serveMetricsInfo(libp2p: Libp2p, info: MetricsInfo): Promise<void> {
  await handleRpc(libp2p, METRICS_INFO_PROTOCOL, async (rpc) => {
    await rpc.writeJson({ ok: true, ...info })
  })
}

/** Asks a peer where its metrics are; throws on no answer or a malformed one. */
export async function queryMetricsInfo(
  libp2p: Libp2p,
  peer: PeerId,
  options: { signal?: AbortSignal } = {},
): Promise<MetricsInfo> {
  const signal = AbortSignal.any([
    AbortSignal.timeout(METRICS_INFO_TIMEOUT_MS),
    ...(options.signal != null ? [options.signal] : []),
  ])
  const rpc = await openRpc(libp2p, peer, METRICS_INFO_PROTOCOL, {
    signal,
    maxMessageBytes: MAX_METRICS_INFO_BYTES,
    idleTimeoutMs: METRICS_INFO_TIMEOUT_MS,
  })
  try {
    const reply = await expectReply<{ port?: unknown; host?: unknown }>(rpc, signal)
    return parseMetricsInfo(reply)
  } catch (err) {
    rpc.abort(err as Error)
    throw err
  } finally {
    await rpc.close()
  }
}

/** Validates an answer: a TCP port, and a host without spaces, slashes or quotes. */
export function parseMetricsInfo(reply: { port?: unknown; host?: unknown }): MetricsInfo {
  const { port, host } = reply
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ProtocolViolationError('metrics info: port is not a TCP port')
  }
  if (host == null) return { port }
  if (
    typeof host !== 'string' ||
    host.length === 0 ||
    host.length > MAX_HOST_CHARS ||
    !/^[A-Za-z0-9.:_%-]+$/.test(host)
  ) {
    throw new ProtocolViolationError('metrics info: host is not a host name or address')
  }
  return { port, host }
}

/** The IP or DNS name of a multiaddr (`/ip4/10.0.0.7/tcp/4001` → `10.0.0.7`). */
export function multiaddrHost(addr: Multiaddr): string | undefined {
  const c = addr.getComponents().find((x) => ['ip4', 'ip6', 'dns', 'dns4', 'dns6'].includes(x.name))
  return c?.value
}

/** `host:port` for a scrape target, IPv6 in brackets. */
export function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}
