import { PROTOCOL_PREFIX, RTT_PROBE_TIMEOUT_MS } from '@mtc/p2pnode'

// ---------------------------------------------------------------- protocols

/**
 * HTTP/1.1 over a libp2p stream, relayed byte for byte to one TCP connection to the
 * instance's service, after a one-line preface from the instance (see stream-preface.ts).
 * 1.0.0 carried HTTP to an HTTP server on the instance, without the preface.
 */
export const HTTP_PROTOCOL = `/${PROTOCOL_PREFIX}/http/2.0.0`
/**
 * The instance connects to its local service within this, or refuses the stream: a
 * loopback or bridge connect takes well under a millisecond, or is refused at once; but
 * a burst that overflows the service's accept backlog has its SYNs dropped and resent
 * after 1 s and 3 s, so 5 s lets two resends through before calling it unreachable.
 */
export const SERVICE_CONNECT_TIMEOUT_MS = 5_000
/** A caller waits this long for an instance's stream preface: the instance's connect
 * timeout plus room for a slow path. */
export const PREFACE_TIMEOUT_MS = SERVICE_CONNECT_TIMEOUT_MS + 3_000

// ---------------------------------------------------------------- command line defaults

/** Client mode's metrics address: 9103 is the proxy's port in the mesh's port plan. */
export const DEFAULT_METRICS = '0.0.0.0:9103'
/** The gateway listens on loopback only: it is the local entry of this host. */
export const GATEWAY_HOST = '127.0.0.1'
// ---------------------------------------------------------------- gateway limits

/**
 * Largest request head (request line + headers) the gateway reads: Node's own default
 * (16 KiB, `--max-http-header-size`), which is also what nginx's 4 × 8 KiB large
 * buffers and most CDNs allow. Larger heads get 431.
 */
export const MAX_HEADER_BYTES = 16 * 1024
/** A client has this long to send a request head (nginx's client_header_timeout is 60 s;
 * 10 s is ample on loopback, where the gateway's clients live). Then 408. */
export const DEFAULT_HEADERS_TIMEOUT_MS = 10_000
/** How often the gateway checks its head and keep-alive timeouts: each is enforced
 * within this. */
export const CONNECTIONS_CHECK_INTERVAL_MS = 1_000
/** An idle keep-alive client connection is closed after this (Node's default, 5 s). */
export const CLIENT_KEEP_ALIVE_TIMEOUT_MS = 5_000
/**
 * A client connection with no byte either way for this long is closed: bounds slow
 * bodies and abandoned connections, while leaving streamed responses with pauses of
 * minutes alone (nginx's proxy_read_timeout is 60 s; long polls need more).
 */
export const CLIENT_IDLE_TIMEOUT_MS = 5 * 60_000
/** Bytes a client connection reads ahead of what the gateway took (a body not yet
 * forwarded, requests pipelined behind one being answered): then it stops reading. */
export const CLIENT_READ_AHEAD_BYTES = 64 * 1024
/** Requests in flight through one gateway; above it new ones get 503 at once instead of
 * queuing without bound (each holds a stream and two sockets' buffers, ~100 KiB). */
export const MAX_CONCURRENT_REQUESTS = 1024
/** Time from sending a request to an instance until its response head: as nginx's
 * proxy_read_timeout, 60 s. Then 504. */
export const DEFAULT_UPSTREAM_TIMEOUT_MS = 60_000

// ---------------------------------------------------------------- retries

/** Attempts per request, the first included: the first instance and two others. */
export const MAX_ATTEMPTS = 3
/**
 * Request body bytes kept so a failed attempt can be replayed on another instance (as
 * Envoy's retry buffer). A body that outgrows it streams on without a retry net.
 */
export const REPLAY_BUFFER_BYTES = 64 * 1024

// ---------------------------------------------------------------- mesh streams

/**
 * Streams to one instance that one gateway keeps open at once (in use + idle): the
 * HTTP Agent's maxSockets. Above it requests wait for a free stream.
 */
export const MAX_STREAMS_PER_INSTANCE = 256
/**
 * Requests waiting for a stream to an instance whose MAX_STREAMS_PER_INSTANCE are all
 * in use (or being opened): as many as the gateway has in flight...
 */
export const MAX_STREAM_WAITERS_PER_INSTANCE = 1024
/** ...each at most this long (a burst drains in well under a second; a service holding
 * 256 long polls does not free a stream soon). Then 503 ERR_INSTANCE_BUSY. */
export const STREAM_SLOT_WAIT_MS = 10_000
/**
 * An idle warm stream is closed after this (idle streams have no cap of their own below
 * MAX_STREAMS_PER_INSTANCE: mesh-agent.ts says why). A stream is one connection to the
 * service, which closes it after its own keep-alive timeout: this stays below Node's (and many
 * frameworks') 5 s, so a stream the service is closing is not reused; a service that
 * announces `Keep-Alive: timeout=N` gets N − 1 s instead (Node's Agent reads it).
 */
export const IDLE_STREAM_TIMEOUT_MS = 4_000
/** Opening a stream to an instance (dial if needed + protocol negotiation). */
export const OPEN_STREAM_TIMEOUT_MS = 5_000
/**
 * Inbound/outbound HTTP streams per libp2p connection (libp2p's defaults are 32/64):
 * a gateway's maxSockets per instance plus room for a second gateway behind the same
 * peer ID; yamux itself allows 1,000.
 */
export const MAX_HTTP_STREAMS_PER_CONNECTION = 512
/** Node-side buffer of a stream adapter, each way: the size of one yamux frame. */
export const STREAM_HIGH_WATER_MARK = 64 * 1024
/**
 * What all mesh streams of a process may have granted to their remotes (yamux receive
 * windows), so what they buffer for readers that stopped reading: shared equally by the
 * streams open (see StreamBudget).
 */
export const STREAM_BUFFER_BUDGET_BYTES = 32 * 1024 * 1024
/** A stream's receive window, at most: 100 MB/s per stream at 40 ms RTT, and 16 streams
 * get it before the budget shares it out (yamux's own maximum is 16 MiB). */
export const STREAM_MAX_WINDOW_BYTES = 2 * 1024 * 1024
/** ...and at least yamux's initial window, which a remote may always use. */
export const STREAM_MIN_WINDOW_BYTES = 256 * 1024

// ---------------------------------------------------------------- discovery and probing

/** One DHT lookup of a service's providers; a cold request waits at most this long. */
export const DISCOVERY_TIMEOUT_MS = 5_000
/** After a lookup found nothing, requests get 404 without asking again for this long. */
export const NEGATIVE_CACHE_MS = 1_000
/** Providers of a service in use are looked up again this often. */
export const PROVIDER_REFRESH_MS = 10_000
/** Instances of a service in use are probed (ping RTT + status) this often. */
export const PROBE_INTERVAL_MS = 1_000
/** One probe (status, then the pings) fails after this: as p2pnode's RTT probe. */
export const PROBE_TIMEOUT_MS = RTT_PROBE_TIMEOUT_MS
/**
 * Pings per probe of an instance or allocator, on one stream; the smallest counts. A single
 * ping on a busy proxy read 18–52 ms for a 5 ms path in the WAN scenarios (timers, GC and
 * requests share the event loop), enough to push a near instance above a soft limit.
 */
export const RTT_SAMPLES_PER_PROBE = 3
/** A never-answered instance gets short probes (a LAN answers in ms, and a cold request
 * is waiting for this one)... */
export const FIRST_PROBE_TIMEOUT_MS = 1_000
/** ...this many in a row before waiting for the next probe round. */
export const FIRST_PROBE_ATTEMPTS = 3
/** A service unused for this long is no longer probed or refreshed. */
export const ACTIVE_SERVICE_MS = 60_000
/** A service unused for this long is forgotten, with its warm streams. */
export const SERVICE_EXPIRY_MS = 10 * 60_000
/** An instance that failed this many probes in a row is forgotten (until rediscovered). */
export const INSTANCE_FORGET_AFTER_FAILURES = 10
/** An instance an allocator handed out is not forgotten for failed probes before this: the
 * allocator's own start timeout (30 s), the longest its first connection may plausibly take. */
export const ADOPTED_INSTANCE_GRACE_MS = 30_000
/** Instances of one service tracked at once: bounds probing work per service. */
export const MAX_INSTANCES_PER_SERVICE = 32

// ---------------------------------------------------------------- selection

/** An instance's distance is the smallest RTT of its last this many probes (one a second):
 * a noisy sample never raises it, a real rise counts after ~10 s. */
export const RTT_DISTANCE_PROBES = 10
/**
 * An instance above the hard limit is judged too far only after this many probes; until
 * then a request waits for them (at most RTT_SETTLE_WAIT_MS). At 30 hosts a proxy just
 * started on a starved host read its own host's instance at 533 ms on its first probe and
 * answered 503 ERR_INSTANCES_TOO_FAR.
 */
export const RTT_SETTLE_PROBES = 3
/** How long a request waits for instances above the hard limit to settle (probes 1 s apart). */
export const RTT_SETTLE_WAIT_MS = (RTT_SETTLE_PROBES + 1) * PROBE_INTERVAL_MS
/**
 * Time constant of the request-latency peak-EWMA: how fast a latency below the current
 * estimate pulls it down, and how fast what requests taught fades back to the probe RTT
 * (so an instance not used for a while is tried again). 10 s is Finagle's and Linkerd's
 * peak-EWMA decay: a spike counts at once, and the instance earns its traffic back over
 * ~10 s rather than on one lucky answer.
 */
export const OBSERVATION_DECAY_MS = 10_000
/**
 * ...and the least a latency below the estimate moves it, per sample. With the time
 * constant alone, an instance answering hundreds of requests a second is judged by the
 * worst answer of its last seconds (on a busy host, 2× its median), which hides a 10×
 * difference in service time; 1/16 makes a spike fade within a few dozen answers.
 */
export const PEAK_SAMPLE_GAIN = 1 / 16
/** Latency added per recent error (decaying like observations): one error outweighs any
 * real latency difference, so a fast-failing instance does not win. */
export const ERROR_PENALTY_MS = 1_000

// ---------------------------------------------------------------- service mode

/** Re-announce the service in the DHT this often (provider records expire after 48 h, but
 * a restarted DHT peer forgets them: this bounds how long an instance stays unfindable). */
export const PROVIDE_INTERVAL_MS = 60_000
/** One provide; then retried with backoff. */
export const PROVIDE_TIMEOUT_MS = 10_000
/** The first re-announcement after the first provide; it doubles up to PROVIDE_INTERVAL_MS. */
export const PROVIDE_FIRST_INTERVAL_MS = 1_000
/** Retry backoff of a failed provide (while no DHT peer is reachable yet). */
export const PROVIDE_BACKOFF = { initialMs: 250, maxMs: 10_000, factor: 2 }
/** How often the instance checks that its local service accepts connections. */
export const READINESS_INTERVAL_MS = 1_000
/** One readiness check (a TCP connect on the host). */
export const READINESS_TIMEOUT_MS = 1_000
/**
 * After the service's connection closed, the instance ends the stream and waits this long
 * for the caller to close its side (it does at once when it reads the end), then resets it.
 */
export const STREAM_LINGER_MS = 5_000
/**
 * Stopping, the instance closes a stream once it is quiet: its last bytes went to the
 * caller (an answer, not a request waiting for one) and nothing moved for this long...
 */
export const STOP_QUIET_MS = 250
/** ...and resets what is still open after this, within the daemon's 10 s stop. */
export const STOP_GRACE_MS = 8_000
/** Health checks (`--health-path`): default period, and failed checks in a row before an
 * instance is not ready (so one slow answer does not take it out of service). */
export const DEFAULT_HEALTH_INTERVAL_MS = 2_000
export const DEFAULT_HEALTH_THRESHOLD = 3

// ---------------------------------------------------------------- on-demand instances

/**
 * How long a request waits for an instance being started for it (`--allocation-timeout`):
 * as nginx's proxy_read_timeout. A start that fetches an image can take longer; later
 * requests join it. Then 503 ERR_ALLOCATION_TIMEOUT.
 */
export const DEFAULT_ALLOCATION_TIMEOUT_MS = 60_000
/**
 * Requests of one service waiting for an allocated instance: above it 503 ERR_QUEUE_FULL at
 * once. Each waiting request holds only its socket; the gateway's 1,024 in flight bound
 * them all together.
 */
export const MAX_WAITING_PER_SERVICE = 1_000
/**
 * After a failed allocation, requests of the service get the same answer without asking
 * again for this long (an unknown name or a full mesh is not asked 1,000 times a second);
 * also the Retry-After of those answers.
 */
export const ALLOCATION_FAILURE_HOLD_MS = 5_000
/**
 * At most one background allocation per service for a nearer instance (the best is above
 * the soft limit) this often: an allocator may answer with the same far instance.
 */
export const NEARER_ALLOCATION_INTERVAL_MS = 30_000
/**
 * An allocation that handed out an instance which answers but takes no request yet (not
 * ready, draining, failing its health check) stays the service's allocation this long:
 * requests arriving meanwhile wait for that instance (or another becoming usable) with the
 * others, rather than each asking again (one ask per request while every instance drains).
 */
export const HANDED_OUT_SHARE_MS = 5_000
/**
 * An allocation that handed out an instance this proxy cannot reach (it died, and its
 * allocator had not noticed yet) is asked again, at most this many times per waiting
 * request, each after ALLOCATION_REASK_DELAY_MS; then the request waits out
 * `--allocation-timeout` for the instance to answer. The allocator checks its container
 * before handing it out, so one re-ask normally suffices.
 */
export const MAX_ALLOCATION_REASKS = 3
/** Docker reports a container's death within milliseconds; 250 ms leaves it room. */
export const ALLOCATION_REASK_DELAY_MS = 250
/**
 * Before an allocation replaces instances whose connection was just lost, their new probe
 * gets this long: a live instance answers within it (as FIRST_PROBE_TIMEOUT_MS), a dead
 * one is refused in milliseconds.
 */
export const REPROBE_WAIT_MS = 1_000
/** Allocators asked in turn for one allocation (the nearest with room first). */
export const MAX_ALLOCATION_ATTEMPTS = 3
/** Allocators probed (RTT + capacity) per allocation: the first found in the DHT. */
export const MAX_ALLOCATORS = 16
/** One allocator probe (dial + ping + status); one that does not answer is skipped. */
export const ALLOCATOR_PROBE_TIMEOUT_MS = 2_000
/** One DHT lookup of the allocators; what it found so far is kept. */
export const ALLOCATOR_LOOKUP_TIMEOUT_MS = 5_000
/** The allocators are looked up again (in the background) when older than this... */
export const ALLOCATOR_REFRESH_MS = 30_000
/** ...or, when none was found, before the next allocation after this. */
export const ALLOCATOR_NEGATIVE_CACHE_MS = 1_000

// ---------------------------------------------------------------- scaling

/** How often each service in use is looked at for a scale-out (and "at once" means). */
export const SCALE_TICK_MS = 500
/**
 * Load per instance above the record's concurrency, on average over this window, asks for
 * another instance (twice the target asks at once). Knative's stable window is 60 s for
 * instances that take seconds to start; ours start in about one, so 3 s.
 */
export const SCALE_OUT_WINDOW_MS = 3_000
/**
 * Twice the target on average over this window asks at once (Knative's panic window, 6 s
 * there, 10 % of its stable window): longer than one probe interval, so that a burst of
 * requests that waited during an outage and reach the replacement at once weighs what it
 * costs (request-seconds), not its count.
 */
export const PANIC_WINDOW_MS = 1_000
/** After a scale-out ended, the next waits this long: the new instance takes its share of
 * the requests first (selection moves them within a few answers). */
export const SCALE_OUT_COOLDOWN_MS = 1_000
/** What an instance reported about its load counts this long (probes come every second). */
export const REPORTED_LOAD_MAX_AGE_MS = 3_000

// ---------------------------------------------------------------- requirements from the registry

/** Without hl-service's change notices, a service's record (its RTT limits) is read again
 * after this; meanwhile it is served from the cache, and once stale while a fresh one is
 * read in the background. With notices it is read again only after a change. */
export const REQUIREMENTS_TTL_MS = 30_000
/** Without hl-service's change notices, "no such service" is trusted this long (a
 * registration takes effect within it); with them, until a notice names the service. */
export const REQUIREMENTS_NEGATIVE_TTL_MS = 1_000
/** The first request of a service waits this long for its record, then uses `--config`'s
 * limits (the record is still read and used from then on). */
export const REQUIREMENTS_FIRST_WAIT_MS = 1_000
/** One record read from hl-service. */
export const REQUIREMENTS_FETCH_TIMEOUT_MS = 5_000
/** Finding an hl-service in the DHT; none found means the registry is unavailable. */
export const REGISTRY_LOOKUP_TIMEOUT_MS = 5_000
/** An unavailable registry is looked for again after this; meanwhile requests do not wait
 * for it (cached records stay in use, others get `--config`'s limits). */
export const REGISTRY_RETRY_MS = 10_000
/** Services whose records, allocation failures... are remembered (the oldest are dropped
 * above it): bounds memory against clients that make up names. */
export const MAX_TRACKED_SERVICES = 10_000
