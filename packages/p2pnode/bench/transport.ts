/**
 * Pair benchmark of the transport: two libp2p nodes in this process on loopback, TCP +
 * PSK + Noise + yamux configured as MeshNode does, in variants from the stock stack to
 * ours one change at a time:
 *
 *   node packages/p2pnode/bench/transport.ts [rounds=2] [MB=100]
 *
 * Per variant: MB/s of one stream carrying MB megabytes (64 KiB writes, the receiver
 * hashing nothing), and round trips/s of 1 KB echoes over one stream (5 s).
 * "stock" = @libp2p/pnet (xsalsa20@1.2.0), Noise's default crypto, a yamux window update
 * per data frame; "ours" = MeshNode's stack.
 */
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import type { YamuxStream } from '@chainsafe/libp2p-yamux/stream'
import type { Libp2p, MessageStream, Stream, StreamMuxerFactory } from '@libp2p/interface'
import { preSharedKey } from '@libp2p/pnet'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import { Uint8ArrayList } from 'uint8arraylist'
import { STREAM_MAX_READ_BUFFER_BYTES, YAMUX_MAX_STREAM_WINDOW_BYTES } from '../src/constants.ts'
import { meshNoiseCrypto } from '../src/noise-crypto.ts'
import { pskProtector } from '../src/pnet.ts'
import { formatSwarmKey, generatePsk, type Psk } from '../src/psk.ts'
import { sendWithBackpressure } from '../src/stream-io.ts'
import { coalescingMuxer } from '../src/write-coalescing.ts'

interface Variant {
  name: string
  pnet: 'stock' | 'ours'
  noise: 'stock' | 'ours'
  yamux: 'per-frame' | 'lazy'
}

const VARIANTS: Variant[] = [
  { name: 'stock', pnet: 'stock', noise: 'stock', yamux: 'per-frame' },
  { name: '+ lazy yamux window updates', pnet: 'stock', noise: 'stock', yamux: 'lazy' },
  { name: '+ Noise KeyObject', pnet: 'stock', noise: 'ours', yamux: 'lazy' },
  { name: 'ours (+ sodium-native pnet)', pnet: 'ours', noise: 'ours', yamux: 'lazy' },
]

/** Unpatched yamux's rule: a window update after every data frame. */
function perFrame(factory: StreamMuxerFactory): StreamMuxerFactory {
  return {
    protocol: factory.protocol,
    createStreamMuxer: (conn: MessageStream) => {
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

async function startNode(v: Variant, psk: Psk): Promise<Libp2p> {
  const streamOptions = {
    maxStreamWindowSize: YAMUX_MAX_STREAM_WINDOW_BYTES,
    maxReadBufferLength: STREAM_MAX_READ_BUFFER_BYTES,
  }
  const muxer = coalescingMuxer(() =>
    v.yamux === 'lazy' ? yamux({ streamOptions })() : perFrame(yamux({ streamOptions })()),
  )
  return await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionProtector:
      v.pnet === 'ours'
        ? pskProtector({ psk })
        : preSharedKey({ psk: new TextEncoder().encode(formatSwarmKey(psk)) }),
    connectionEncrypters: [noise(v.noise === 'ours' ? { crypto: meshNoiseCrypto } : {})],
    streamMuxers: [muxer],
  })
}

const SINK = '/bench/sink/1.0.0'
const ECHO = '/bench/echo/1.0.0'

async function bulk(a: Libp2p, b: Libp2p, bytes: number): Promise<number> {
  let done: () => void = () => {}
  const finished = new Promise<void>((resolve) => {
    done = resolve
  })
  let received = 0
  await b.handle(SINK, (stream) => {
    stream.addEventListener('message', (evt) => {
      received += evt.data.byteLength
      if (received >= bytes) done()
    })
  })
  const stream = await a.dialProtocol(b.peerId, SINK)
  const chunk = new Uint8Array(64 * 1024).fill(1)
  const start = performance.now()
  for (let sent = 0; sent < bytes; sent += chunk.byteLength) {
    await sendWithBackpressure(stream, chunk)
  }
  await finished
  const seconds = (performance.now() - start) / 1000
  stream.abort(new Error('done'))
  return bytes / 1e6 / seconds
}

async function echo(a: Libp2p, b: Libp2p, ms: number): Promise<number> {
  await b.handle(ECHO, (stream: Stream) => {
    stream.addEventListener('message', (evt) => stream.send(evt.data))
  })
  const stream = await a.dialProtocol(b.peerId, ECHO)
  const message = new Uint8Array(1024).fill(2)
  const buffer = new Uint8ArrayList()
  let wake: () => void = () => {}
  stream.addEventListener('message', (evt) => {
    buffer.append(evt.data)
    if (buffer.byteLength >= message.byteLength) wake()
  })
  let trips = 0
  const start = performance.now()
  while (performance.now() - start < ms) {
    const got = new Promise<void>((resolve) => {
      wake = resolve
    })
    stream.send(message)
    await got
    buffer.consume(message.byteLength)
    trips++
  }
  const rate = trips / ((performance.now() - start) / 1000)
  stream.abort(new Error('done'))
  return rate
}

async function main(): Promise<void> {
  const rounds = Number(process.argv[2] ?? 2)
  const mb = Number(process.argv[3] ?? 100)
  const results = new Map<string, { mbps: number[]; rtps: number[] }>()
  for (let round = 0; round < rounds; round++) {
    for (const v of VARIANTS) {
      const psk = generatePsk()
      const [a, b] = [await startNode(v, psk), await startNode(v, psk)]
      try {
        await a.dial(b.getMultiaddrs()[0])
        await bulk(a, b, 8 * 1024 * 1024) // warm-up
        await b.unhandle(SINK)
        const mbps = await bulk(a, b, mb * 1024 * 1024)
        const rtps = await echo(a, b, 5_000)
        const r = results.get(v.name) ?? { mbps: [], rtps: [] }
        r.mbps.push(mbps)
        r.rtps.push(rtps)
        results.set(v.name, r)
        console.error(
          `round ${round + 1} ${v.name}: ${mbps.toFixed(0)} MB/s, ${rtps.toFixed(0)} round trips/s`,
        )
      } finally {
        await Promise.all([a.stop(), b.stop()])
      }
    }
  }
  const best = (xs: number[]): number => Math.max(...xs)
  console.log(`| variant | ${mb} MB stream, MB/s (best of ${rounds}) | 1 KB echo, round trips/s |`)
  console.log('|---|---|---|')
  for (const [name, r] of results) {
    console.log(`| ${name} | ${best(r.mbps).toFixed(0)} | ${best(r.rtps).toFixed(0)} |`)
  }
}

await main()
