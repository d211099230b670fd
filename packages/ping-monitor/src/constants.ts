/** The well-known bootstrap port of the original system. */
export const DEFAULT_LISTEN = '/ip4/0.0.0.0/tcp/4001'
export const DEFAULT_METRICS = '0.0.0.0:9100'
/** How often every connected peer is probed. */
export const DEFAULT_INTERVAL_MS = 1000
/** A peer unheard for this long loses its series (the contract's 10 minutes). */
export const DEFAULT_PEER_EXPIRY_MS = 10 * 60_000
/** Weight of a new sample in the smoothed RTT: TCP's SRTT gain (RFC 6298). */
export const RTT_SMOOTHING = 0.125
/** Probes in flight at once, so a round over 1,000 peers does not open 1,000 streams. */
export const MAX_CONCURRENT_PROBES = 64
/** Errors the status page keeps (a peer's repeats count as one). */
export const RECENT_ERRORS = 20
/** How often service instances are asked again whether their service answers. */
export const STATUS_REFRESH_MS = 10_000
