import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import {
  RPC_IDLE_TIMEOUT_MS,
  RPC_MAX_CHUNK_BYTES,
  RPC_MAX_INBOUND_STREAMS,
  RPC_MAX_MESSAGE_BYTES,
} from './constants.ts'
import { encodeVarint, FrameReader, FrameTooLargeError, sendWithBackpressure } from './stream-io.ts'

/** An error answered by the remote side of an mtc protocol, with its stable code. */
export class RemoteError extends Error {
  override readonly name = 'RemoteError'
  readonly code: string

  constructor(code: string, message: string) {
    super(message)
    this.code = code
  }
}

/** A message that is not what the protocol allows (too large, not JSON, wrong shape). */
export class ProtocolViolationError extends Error {
  static readonly code = 'ERR_PROTOCOL'
  override readonly name = 'ProtocolViolationError'
  readonly code = ProtocolViolationError.code
}

export interface RpcOptions {
  maxMessageBytes?: number
  idleTimeoutMs?: number
}

/**
 * One exchange of an mtc protocol over a libp2p stream: length-prefixed JSON messages,
 * then optionally bulk data as length-prefixed chunks ended by an empty one (so a cut
 * transfer is told apart from a complete one). Every read is size-capped and has an
 * idle timeout.
 */
export class RpcStream {
  readonly stream: Stream
  private readonly reader: FrameReader
  private readonly idleTimeoutMs: number
  private readonly maxMessageBytes: number

  constructor(stream: Stream, options: RpcOptions = {}) {
    this.stream = stream
    this.reader = new FrameReader(stream)
    this.idleTimeoutMs = options.idleTimeoutMs ?? RPC_IDLE_TIMEOUT_MS
    this.maxMessageBytes = options.maxMessageBytes ?? RPC_MAX_MESSAGE_BYTES
  }

  private signal(outer?: AbortSignal): AbortSignal {
    const idle = AbortSignal.timeout(this.idleTimeoutMs)
    return outer != null ? AbortSignal.any([outer, idle]) : idle
  }

  /**
   * One message. `idle: false` waits for it without the idle timeout: a reply that may
   * come while this side is still sending, which the idle clock must not count.
   */
  async readJson<T = unknown>(signal?: AbortSignal, options: { idle?: boolean } = {}): Promise<T> {
    let frame: Uint8Array
    try {
      const s = options.idle === false ? signal : this.signal(signal)
      frame = await this.reader.read(this.maxMessageBytes, s)
    } catch (err) {
      if (err instanceof FrameTooLargeError) throw new ProtocolViolationError(err.message)
      throw err
    }
    try {
      return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(frame)) as T
    } catch {
      throw new ProtocolViolationError('message is not valid JSON')
    }
  }

  async writeJson(value: unknown, signal?: AbortSignal): Promise<void> {
    await this.writeFrame(new TextEncoder().encode(JSON.stringify(value)), signal)
  }

  /** Bulk data sent after a message; ends at the empty chunk, throws if the stream ends first. */
  async *readChunks(signal?: AbortSignal): AsyncGenerator<Uint8Array> {
    while (true) {
      const chunk = await this.reader.read(RPC_MAX_CHUNK_BYTES, this.signal(signal))
      if (chunk.byteLength === 0) return
      yield chunk
    }
  }

  async writeChunks(
    source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    signal?: AbortSignal,
  ): Promise<void> {
    for await (const data of source) {
      for (let off = 0; off < data.byteLength; off += RPC_MAX_CHUNK_BYTES) {
        await this.writeFrame(data.subarray(off, off + RPC_MAX_CHUNK_BYTES), signal)
      }
    }
    await this.writeFrame(new Uint8Array(0), signal)
  }

  private async writeFrame(payload: Uint8Array, signal?: AbortSignal): Promise<void> {
    const s = this.signal(signal)
    await sendWithBackpressure(this.stream, encodeVarint(payload.byteLength), s)
    if (payload.byteLength > 0) await sendWithBackpressure(this.stream, payload, s)
  }

  async close(): Promise<void> {
    await this.stream.close().catch((err: Error) => this.stream.abort(err))
  }

  abort(err: Error): void {
    this.stream.abort(err)
  }
}

/** Opens a stream to `peer` on `protocol` for one exchange. */
export async function openRpc(
  libp2p: Libp2p,
  peer: PeerId | Multiaddr,
  protocol: string,
  options: RpcOptions & { signal?: AbortSignal } = {},
): Promise<RpcStream> {
  const stream = await libp2p.dialProtocol(peer, protocol, { signal: options.signal })
  return new RpcStream(stream, options)
}

/** The answer envelope of every mtc request/response protocol. */
export type RpcReply<T> = ({ ok: true } & T) | { ok: false; code: string; message: string }

/** Sends a request and reads the reply, turning `{ok:false}` into a RemoteError. */
export async function expectReply<T>(
  rpc: RpcStream,
  signal?: AbortSignal,
  options: { idle?: boolean } = {},
): Promise<T> {
  const reply = await rpc.readJson<RpcReply<T>>(signal, options)
  if (reply == null || typeof reply !== 'object' || typeof reply.ok !== 'boolean') {
    throw new ProtocolViolationError('malformed reply')
  }
  if (!reply.ok) {
    const r = reply as { code: unknown; message: unknown }
    throw new RemoteError(String(r.code), String(r.message))
  }
  return reply as T
}

export type RpcHandler = (rpc: RpcStream, connection: Connection) => Promise<void>

/** The code of a failure that has no mtc code of its own (a system error, a bug). */
export const INTERNAL_ERROR_CODE = 'ERR_INTERNAL'

/** A handler's failure as its wire code: mtc's own codes go as they are, others are internal. */
export function wireErrorCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && code.startsWith('ERR_') ? code : INTERNAL_ERROR_CODE
}

/**
 * Serves `protocol`: each inbound stream is one exchange run by `handler`. A handler that
 * throws has its error answered as `{ok:false, code, message}` when the stream still
 * allows it, then the stream is closed.
 */
export async function handleRpc(
  libp2p: Libp2p,
  protocol: string,
  handler: RpcHandler,
  options: RpcOptions & { maxInboundStreams?: number } = {},
): Promise<void> {
  await libp2p.handle(
    protocol,
    async (stream, connection) => {
      const rpc = new RpcStream(stream, options)
      try {
        await handler(rpc, connection)
        await rpc.close()
      } catch (err) {
        const e = err as Error
        try {
          await rpc.writeJson({ ok: false, code: wireErrorCode(e), message: e.message })
          await rpc.close()
        } catch {
          rpc.abort(e)
        }
      }
    },
    { maxInboundStreams: options.maxInboundStreams ?? RPC_MAX_INBOUND_STREAMS },
  )
}
