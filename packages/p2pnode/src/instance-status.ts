import type {
  Libp2p,
  PeerId,
  Stream,
  StreamCloseEvent,
  StreamMessageEvent,
} from '@libp2p/interface'
import {
  DRAIN_PROTOCOL,
  MAX_STATUS_BYTES,
  STATUS_PROTOCOL,
  STATUS_TIMEOUT_MS,
} from './constants.ts'

/** What an instance's proxy reports about itself on STATUS_PROTOCOL and at /status. */
export interface InstanceStatus {
  service: string
  /** Seconds since the last request from the mesh ended; 0 while one is in flight. */
  idleSeconds: number
  /** The local service accepts connections (or passes its health check, when it has one). */
  ready: boolean
  /**
   * Requests from the mesh the instance is serving now, from every proxy (its own load as a
   * whole, which no single client proxy sees); absent from older instances.
   */
  inFlight?: number
  /** ID (`sha256:...`) of the image the instance runs, when its allocator said. */
  imageId?: string
  /** Being stopped (rolling update): finishes what it has, should get no new request. */
  draining?: boolean
}

/** Answers one status query: the JSON document, then close. */
export async function answerStatus(stream: Stream, status: InstanceStatus): Promise<void> {
  try {
    stream.send(new TextEncoder().encode(JSON.stringify(status)))
    await stream.close({ signal: AbortSignal.timeout(STATUS_TIMEOUT_MS) })
  } catch (err) {
    stream.abort(err as Error)
  }
}

/** Asks an instance for its status (a fresh stream; a few hundred µs on a LAN). */
export async function queryStatus(
  libp2p: Libp2p,
  peer: PeerId,
  options: { signal?: AbortSignal } = {},
): Promise<InstanceStatus> {
  const signal = AbortSignal.any([
    AbortSignal.timeout(STATUS_TIMEOUT_MS),
    ...(options.signal != null ? [options.signal] : []),
  ])
  const stream = await libp2p.dialProtocol(peer, STATUS_PROTOCOL, { signal })
  // Listen at once: the answer and the remote's close can arrive before any await
  // returns, and the stream's async iterator misses a close-write that already happened.
  const chunks: Uint8Array[] = []
  let size = 0
  const { promise, resolve, reject } = Promise.withResolvers<void>()
  const onMessage = (evt: StreamMessageEvent): void => {
    size += evt.data.byteLength
    if (size > MAX_STATUS_BYTES)
      reject(new Error(`status answer exceeds ${MAX_STATUS_BYTES} bytes`))
    else chunks.push(evt.data.subarray())
  }
  const onEnd = (): void => resolve()
  // A clean close can precede the dispatch of what is still buffered: let it flush.
  const onClose = (evt: StreamCloseEvent): void => {
    if (evt.error != null) reject(evt.error)
    else setTimeout(resolve, 0)
  }
  const onAbort = (): void => reject(signal.reason)
  stream.addEventListener('message', onMessage)
  stream.addEventListener('end', onEnd)
  stream.addEventListener('close', onClose)
  signal.addEventListener('abort', onAbort)
  try {
    if (stream.readableEnded) resolve()
    await stream.close({ signal })
    await promise
    const json = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Partial<InstanceStatus>
    if (
      typeof json.service !== 'string' ||
      typeof json.ready !== 'boolean' ||
      typeof json.idleSeconds !== 'number'
    ) {
      throw new Error('malformed status answer')
    }
    const status: InstanceStatus = {
      service: json.service,
      ready: json.ready,
      idleSeconds: json.idleSeconds,
    }
    if (Number.isSafeInteger(json.inFlight) && (json.inFlight as number) >= 0)
      status.inFlight = json.inFlight
    if (typeof json.imageId === 'string') status.imageId = json.imageId
    if (json.draining === true) status.draining = true
    return status
  } catch (err) {
    stream.abort(err as Error)
    throw err
  } finally {
    stream.removeEventListener('message', onMessage)
    stream.removeEventListener('end', onEnd)
    stream.removeEventListener('close', onClose)
    signal.removeEventListener('abort', onAbort)
  }
}

/**
 * Asks an instance to drain (DRAIN_PROTOCOL): resolves once it answered that it drains;
 * rejects when it refuses (not its allocator) or does not answer.
 */
export async function requestDrain(
  libp2p: Libp2p,
  peer: PeerId,
  options: { signal?: AbortSignal } = {},
): Promise<void> {
  const signal = AbortSignal.any([
    AbortSignal.timeout(STATUS_TIMEOUT_MS),
    ...(options.signal != null ? [options.signal] : []),
  ])
  const stream = await libp2p.dialProtocol(peer, DRAIN_PROTOCOL, { signal })
  try {
    let answer = ''
    const { promise, resolve, reject } = Promise.withResolvers<void>()
    stream.addEventListener('message', (evt: StreamMessageEvent) => {
      answer += Buffer.from(evt.data.subarray()).toString('utf8')
      if (answer.length > MAX_STATUS_BYTES) reject(new Error('drain answer too long'))
    })
    stream.addEventListener('close', (evt: StreamCloseEvent) =>
      evt.error != null ? reject(evt.error) : setTimeout(resolve, 0),
    )
    signal.addEventListener('abort', () => reject(signal.reason), { once: true })
    await stream.close({ signal })
    await promise
    if (answer !== 'draining')
      throw new Error(`instance refused to drain: ${answer || 'no answer'}`)
  } catch (err) {
    stream.abort(err as Error)
    throw err
  }
}

/**
 * Serves DRAIN_PROTOCOL: `allowed` decides from the caller's peer ID; an accepted caller
 * gets "draining" (and `onDrain` runs), others "refused".
 */
export async function answerDrain(
  stream: Stream,
  caller: PeerId,
  allowed: (caller: PeerId) => boolean,
  onDrain: () => void,
): Promise<void> {
  try {
    const ok = allowed(caller)
    if (ok) onDrain()
    stream.send(new TextEncoder().encode(ok ? 'draining' : 'refused'))
    await stream.close({ signal: AbortSignal.timeout(STATUS_TIMEOUT_MS) })
  } catch (err) {
    stream.abort(err as Error)
  }
}
