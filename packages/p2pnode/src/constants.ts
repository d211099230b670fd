/** Protocol prefix of every mtc protocol; keeps the mesh's DHT apart from the public one. */
export const PROTOCOL_PREFIX = 'mtc'

/** kad-dht protocol of the mesh (`/mtc/kad/1.0.0`). */
export const DHT_PROTOCOL = `/${PROTOCOL_PREFIX}/kad/1.0.0`

/** Default listen address of a daemon other than ping-monitor: any interface, random port. */
export const DEFAULT_LISTEN = '/ip4/0.0.0.0/tcp/0'

/** Bootstrap redial: first delay, cap and growth factor of the exponential backoff. */
export const BOOTSTRAP_BACKOFF_INITIAL_MS = 250
/** 30 s keeps a lost bootstrap's log quiet while a restarted one is found within a minute. */
export const BOOTSTRAP_BACKOFF_MAX_MS = 30_000
export const BOOTSTRAP_BACKOFF_FACTOR = 2
/** One dial attempt to a bootstrap; a loopback or LAN dial that takes longer has failed. */
export const BOOTSTRAP_DIAL_TIMEOUT_MS = 10_000

/**
 * scrypt parameters of the passphrase KDF: N=2^17, r=8, p=1 costs 128 MiB and ~0.3 s
 * per guess here (OWASP's 2023 minimum is N=2^17), which makes a dictionary attack on a
 * captured handshake expensive while a daemon pays it once at start-up.
 */
export const PSK_SCRYPT_N = 2 ** 17
export const PSK_SCRYPT_R = 8
export const PSK_SCRYPT_P = 1
/** Fixed, documented salt: every node must derive the same key from the same passphrase. */
export const PSK_SCRYPT_SALT = 'mtc/psk/v1'
export const PSK_KEY_LENGTH = 32

/** Multiaddrs of a swarm key file header (the go-libp2p/ipfs format). */
export const SWARM_KEY_HEADER = '/key/swarm/psk/1.0.0/'
export const SWARM_KEY_CODEC = '/base16/'
/** A swarm key file is three short lines; anything larger is not one. */
export const SWARM_KEY_MAX_FILE_BYTES = 1024

/** A key file holds one protobuf-encoded Ed25519 key (68 bytes); cap what is read. */
export const KEY_FILE_MAX_BYTES = 16 * 1024

/** Metrics/health server: a request that sends its headers slower than this is dropped. */
export const METRICS_HEADERS_TIMEOUT_MS = 10_000

/** How long a graceful stop may take before the process exits anyway. */
export const SHUTDOWN_TIMEOUT_MS = 10_000

/** Bytes sent in one RTT probe, as libp2p's ping protocol does. */
export const RTT_PROBE_BYTES = 32
/** An RTT probe unanswered after this long counts as failed. */
export const RTT_PROBE_TIMEOUT_MS = 5_000
/** Upper bound of pings in one RTT probe (a caller's `samples`). */
export const MAX_RTT_SAMPLES = 10
/**
 * The mesh's own echo protocol for RTT probes and liveness pings. libp2p's ping protocol
 * allows one outbound stream per connection, and libp2p's connection monitor aborted the
 * whole connection when its ping met a probe of ours there.
 */
export const RTT_PROTOCOL = `/${PROTOCOL_PREFIX}/rtt/1.0.0`
/** Concurrent echo streams per connection and direction (probes of several callers + liveness). */
export const RTT_MAX_STREAMS_PER_CONNECTION = 16
/** An echo stream is reset after this long, whatever the prober does (probes give up at 5 s). */
export const RTT_ECHO_LIFETIME_MS = 2 * RTT_PROBE_TIMEOUT_MS
/**
 * Outbound `/ipfs/ping/1.0.0` streams per connection (libp2p's default is 1): probes of a
 * peer of an older release fall back to that protocol, and two callers may probe at once.
 */
export const PING_MAX_OUTBOUND_STREAMS = 4
/** Inbound ping streams per connection (libp2p's default 2): an older peer's monitor and probes. */
export const PING_MAX_INBOUND_STREAMS = 4

/**
 * Liveness (LivenessMonitor, replacing libp2p's connection monitor, which aborted
 * connections when its ping failed for a local reason such as a stream limit): a
 * connection with open streams is pinged on RTT_PROTOCOL every second, so that requests
 * in flight to a host that died fail within ~3 s (libp2p's monitor: 10 s + ≥ 5 s timeout).
 */
export const LIVENESS_BUSY_INTERVAL_MS = 1_000
/** A connection without streams (DHT, bootstrap links) is pinged this often. */
export const LIVENESS_IDLE_INTERVAL_MS = 10_000
/**
 * A connection is aborted when a liveness ping is unanswered and not one byte arrived on
 * it for this long. Bytes of any kind count, so a ping queued behind a bulk transfer on a
 * slow link does not cut a busy connection; only a peer gone silent is cut. 2 s is ~15
 * WAN round trips and longer than a daemon's GC pauses.
 */
export const LIVENESS_TIMEOUT_MS = 2_000
/** How often a pending liveness ping looks at the connection's received bytes. */
export const LIVENESS_POLL_MS = 250
/** A ping still unanswered after this long while bytes keep arriving is given up (busy, alive). */
export const LIVENESS_MAX_WAIT_MS = 30_000

/** The mtc release every binary reports with --version and in its agent version. */
export const MTC_VERSION = '0.1.0'

/**
 * Largest control message of an mtc protocol (JSON): a service record is under 2 KiB,
 * a page of a listing under 32 KiB; anything larger is a broken or hostile peer.
 */
export const RPC_MAX_MESSAGE_BYTES = 64 * 1024
/** Bulk data (image tarballs) travels in chunks of at most this size. */
export const RPC_MAX_CHUNK_BYTES = 256 * 1024
/** A peer silent for this long in the middle of an exchange has gone. */
export const RPC_IDLE_TIMEOUT_MS = 30_000
/** Concurrent inbound streams per connection on one mtc protocol. */
export const RPC_MAX_INBOUND_STREAMS = 32

/**
 * Provider records are re-announced this often. The DHT keeps them for 48 h, but a node
 * that announced before other peers joined reached nobody; 5 minutes bounds how long a
 * newcomer may miss it.
 */
export const ANNOUNCE_INTERVAL_MS = 5 * 60_000
/** First retries of an announcement that failed (e.g. no DHT peer yet). */
export const ANNOUNCE_RETRY_INITIAL_MS = 500
export const ANNOUNCE_RETRY_MAX_MS = 30_000
/** Rounds woken by new peers are at least this far apart, so a join storm is one round. */
export const ANNOUNCE_MIN_GAP_MS = 2_000

/**
 * Inbound connections accepted per second from one IP. libp2p's default of 5 suits the
 * public internet; in a mesh every instance on a host shares the host's IP (host
 * networking), so a burst of cold starts would be refused by the bootstrap.
 */
export const INBOUND_CONNECTIONS_PER_HOST_PER_SECOND = 200
/**
 * Inbound connections in their handshake (not yet past PSK + Noise) at once (libp2p's
 * default is 10; same reason). Past it the oldest pending one is evicted (HandshakeGuard).
 */
export const MAX_INCOMING_PENDING_CONNECTIONS = 128
/**
 * Inbound connections in their handshake at once from one IP; past it that IP's oldest
 * pending one is evicted. A burst of instances on one host dialling together stays under
 * it (their handshakes take milliseconds); an outsider's idle sockets push out each other.
 */
export const MAX_PENDING_HANDSHAKES_PER_HOST = 32
/**
 * Whole inbound handshake (PSK nonces, Noise, muxer selection): three round trips and
 * some CPU, well under a second on a WAN; an outsider's socket is closed after this.
 */
export const INBOUND_HANDSHAKE_TIMEOUT_MS = 5_000

/** Unread bytes a stream reader holds before it pauses the stream (and so the sender). */
export const STREAM_READ_HIGH_WATER_BYTES = 1024 * 1024

/** Yamux's largest per-stream receive window (its default): ~400 MB/s per stream at 40 ms RTT. */
export const YAMUX_MAX_STREAM_WINDOW_BYTES = 16 * 1024 * 1024
/**
 * A paused stream still receives up to one window from the remote; libp2p's default
 * read buffer cap (4 MiB) is below yamux's window, so pausing a fast stream reset it.
 */
export const STREAM_MAX_READ_BUFFER_BYTES = 2 * YAMUX_MAX_STREAM_WINDOW_BYTES
/** Streams one peer has open to us on one connection at once (yamux's default); more are reset. */
export const YAMUX_MAX_INBOUND_STREAMS = 1_000
/**
 * Streams a new connection may carry before libp2p listens for them: the peer's first
 * frames can arrive with its last handshake message, before the upgrader has wired the
 * muxer to the connection. libp2p's default (10) aborted the whole connection when a
 * client opened more at once (20 concurrent requests to a fresh peer: every stream
 * reset); held streams are bounded by the inbound cap either way.
 */
export const YAMUX_MAX_EARLY_STREAMS = YAMUX_MAX_INBOUND_STREAMS

/**
 * An instance's proxy answers "how are you" on this protocol: which service, whether the
 * local service answers, how long since the last request (the allocator reaps on it).
 */
export const STATUS_PROTOCOL = `/${PROTOCOL_PREFIX}/instance-status/1.0.0`
/**
 * "Stop taking new requests": sent by the allocator that owns an instance before it stops
 * it (a rolling update); the instance reports `draining` from then on, and proxies stop
 * choosing it. Accepted only from the peer named in the instance's ALLOCATOR_PEER_ID.
 */
export const DRAIN_PROTOCOL = `/${PROTOCOL_PREFIX}/instance-drain/1.0.0`
/** A status answer is a tiny JSON document. */
export const MAX_STATUS_BYTES = 4 * 1024
/** A status query unanswered this long has failed. */
export const STATUS_TIMEOUT_MS = 5_000

/**
 * Noise messages from this size up are sealed and opened by Node's ChaCha20-Poly1305 with a
 * cached KeyObject, smaller ones by libsodium (noise-crypto.ts). µs per seal / open, Node
 * against libsodium (`node packages/p2pnode/bench/crypto.ts --noise`, 2026-11-29): 1,200 B
 * 7.1 / 5.4 against 1.7 / 1.7; 4 KiB 5.6 / 5.0 against 3.5 / 3.2; 8 KiB 8.3 / 6.2 against
 * 6.2 / 5.8; 12 KiB 9.6 / 7.4 against 9.6 / 8.7; 16 KiB 11.8 / 9.1 against 12.3 / 11.2;
 * 65,519 B 37.3 / 28.0 against 44.5 / 43.8 (OpenSSL's AVX-512 ChaCha20 wins on bulk).
 */
export const NOISE_NODE_CRYPTO_MIN_BYTES = 8_192
