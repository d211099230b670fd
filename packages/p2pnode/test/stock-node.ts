/**
 * Test helpers for the transport: a stock js-libp2p node (tcp + @libp2p/pnet + Noise's
 * default crypto + yamux with a window update per data frame, as unpatched yamux sends
 * them), a yamux frame counter, and bulk transfer over a stream with a digest check.
 */
import { createHash, randomBytes } from 'node:crypto'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import type { YamuxStream } from '@chainsafe/libp2p-yamux/stream'
import { identify } from '@libp2p/identify'
import type { Libp2p, MessageStream, Stream, StreamMuxerFactory } from '@libp2p/interface'
import { type Ping, ping } from '@libp2p/ping'
import { preSharedKey } from '@libp2p/pnet'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import { Uint8ArrayList } from 'uint8arraylist'
import { formatSwarmKey, type Psk } from '../src/psk.ts'
import { sendWithBackpressure } from '../src/stream-io.ts'

const YAMUX_HEADER = 12
const YAMUX_DATA = 0
const YAMUX_WINDOW_UPDATE = 1

/** Counts the yamux frames of one direction of a connection, from its plaintext bytes. */
export class YamuxFrameCounter {
  dataFrames = 0
  dataBytes = 0
  /** WINDOW_UPDATE frames that carry window (length > 0). */
  windowUpdates = 0
  private header = new Uint8ArrayList()
  private skip = 0

  push(data: Uint8Array | Uint8ArrayList): void {
    let buf = data instanceof Uint8Array ? data : data.subarray()
    while (buf.byteLength > 0) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, buf.byteLength)
        this.skip -= n
        buf = buf.subarray(n)
        continue
      }
      const need = YAMUX_HEADER - this.header.byteLength
      this.header.append(buf.subarray(0, need))
      buf = buf.subarray(Math.min(need, buf.byteLength))
      if (this.header.byteLength < YAMUX_HEADER) return
      const type = this.header.get(1)
      const length = this.header.getUint32(8)
      this.header = new Uint8ArrayList()
      if (type === YAMUX_DATA) {
        this.dataFrames++
        this.dataBytes += length
        this.skip = length
      } else if (type === YAMUX_WINDOW_UPDATE && length > 0) {
        this.windowUpdates++
      }
    }
  }
}

/** Frames a node sends (`out`) and receives (`in`) on all its connections. */
export interface FrameCounts {
  out: YamuxFrameCounter
  in: YamuxFrameCounter
}

/**
 * Stock yamux behaviour: every stream sends a window update after every data frame (our
 * workspace's yamux is patched to wait for half a window; `force` restores the old rule).
 */
function perFrameWindowUpdates(
  factory: StreamMuxerFactory,
  counts: FrameCounts,
): StreamMuxerFactory {
  return {
    protocol: factory.protocol,
    createStreamMuxer: (conn: MessageStream) => {
      conn.addEventListener('message', (evt) => counts.in.push(evt.data))
      const send = conn.send.bind(conn)
      conn.send = (data) => {
        counts.out.push(data)
        return send(data)
      }
      const muxer = factory.createStreamMuxer(conn)
      const inner = muxer as unknown as { _newStream(...args: unknown[]): YamuxStream }
      const newStream = inner._newStream.bind(inner)
      inner._newStream = (...args: unknown[]) => {
        const stream = newStream(...args)
        const update = stream.sendWindowUpdate.bind(stream)
        stream.sendWindowUpdate = () => update(true)
        return stream
      }
      return muxer
    },
  }
}

export type StockNode = Libp2p<{ ping: Ping }>

/** A plain createLibp2p node: TCP, stock @libp2p/pnet, Noise's default crypto, yamux. */
export async function startStockNode(psk: Psk, counts: FrameCounts): Promise<StockNode> {
  return await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionProtector: preSharedKey({ psk: new TextEncoder().encode(formatSwarmKey(psk)) }),
    connectionEncrypters: [noise()],
    streamMuxers: [() => perFrameWindowUpdates(yamux()(), counts)],
    services: { identify: identify(), ping: ping() },
  })
}

export function frameCounts(): FrameCounts {
  return { out: new YamuxFrameCounter(), in: new YamuxFrameCounter() }
}

/** Test protocol: the receiver reads everything, then answers "<bytes> <sha256>". */
export const SINK_PROTOCOL = '/mtc/test-sink/1.0.0'

export async function handleSink(node: Libp2p): Promise<void> {
  await node.handle(SINK_PROTOCOL, async (stream) => {
    const hash = createHash('sha256')
    let bytes = 0
    for await (const chunk of stream) {
      bytes += chunk.byteLength
      hash.update(chunk.subarray())
    }
    await sendWithBackpressure(stream, new TextEncoder().encode(`${bytes} ${hash.digest('hex')}`))
    await stream.close()
  })
}

/** Sends `total` random bytes over a sink stream; resolves with both sides' digests. */
export async function sendToSink(
  stream: Stream,
  total: number,
): Promise<{ sent: string; received: string }> {
  const hash = createHash('sha256')
  const chunk = 64 * 1024
  for (let at = 0; at < total; at += chunk) {
    const data = randomBytes(Math.min(chunk, total - at))
    hash.update(data)
    await sendWithBackpressure(stream, data)
  }
  await stream.close()
  const reply = new Uint8ArrayList()
  for await (const buf of stream) reply.append(buf)
  return {
    sent: `${total} ${hash.digest('hex')}`,
    received: new TextDecoder().decode(reply.subarray()),
  }
}
