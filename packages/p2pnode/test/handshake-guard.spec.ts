import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { connect, createServer, type Socket } from 'node:net'
import { afterEach, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { multiaddr } from '@multiformats/multiaddr'
import { INBOUND_HANDSHAKE_TIMEOUT_MS } from '../src/constants.ts'
import type { MeshNode } from '../src/node.ts'
import { generatePsk, type Psk } from '../src/psk.ts'
import { startLoopbackNode } from '../src/testing.ts'
import { RawFlood } from './raw-flood.ts'

const TEST_PROTOCOL = '/mtc/test-hello/1.0.0'

let cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const c of cleanups.reverse()) await c()
  cleanups = []
})

async function startNode(psk: Psk, listen: string[]): Promise<MeshNode> {
  const node = await startLoopbackNode({ psk, listen })
  cleanups.push(() => node.stop())
  return node
}

/**
 * `attempts` fresh connections from `client` to `target`, one after the other, each
 * followed by a stream; how many succeeded and the slowest, in ms.
 */
async function legitConnects(
  client: MeshNode,
  target: MeshNode,
  attempts: number,
  timeoutMs: number,
): Promise<{ ok: number; worstMs: number; errors: string[] }> {
  const addr = target.libp2p.getMultiaddrs()[0]
  const out = { ok: 0, worstMs: 0, errors: [] as string[] }
  for (let i = 0; i < attempts; i++) {
    const t0 = performance.now()
    try {
      const signal = AbortSignal.timeout(timeoutMs)
      const stream = await client.libp2p.dialProtocol(addr, TEST_PROTOCOL, { signal })
      await stream.close()
      out.ok++
    } catch (err) {
      out.errors.push(`${(err as Error).name}: ${(err as Error).message}`)
    }
    out.worstMs = Math.max(out.worstMs, performance.now() - t0)
    await client.libp2p.hangUp(target.peerId).catch(() => {})
  }
  return out
}

/** A started target node answering TEST_PROTOCOL, a client node with the key, the target's port. */
async function targetAndClient(): Promise<{ target: MeshNode; client: MeshNode; port: number }> {
  const psk = generatePsk()
  const target = await startNode(psk, ['/ip4/127.0.0.1/tcp/0'])
  await target.libp2p.handle(TEST_PROTOCOL, (stream) => stream.close())
  const client = await startNode(psk, [])
  const port = Number(/\/tcp\/(\d+)/.exec(target.libp2p.getMultiaddrs()[0].toString())?.[1])
  return { target, client, port }
}

/**
 * One raw connection from 127.0.0.2 doing `act`; resolves when the node closes it, with
 * the time that took and the bytes written. Destroyed by the caller's bound otherwise.
 */
async function outsider(
  port: number,
  act: (socket: Socket) => void,
  boundMs: number,
): Promise<{ closedAfterMs: number; written: number }> {
  const socket = connect({ host: '127.0.0.1', port, localAddress: '127.0.0.2' })
  const t0 = performance.now()
  socket.on('connect', () => act(socket))
  socket.on('error', () => {})
  socket.on('data', () => {})
  const bound = setTimeout(() => socket.destroy(), boundMs)
  try {
    await new Promise((resolve) => socket.once('close', resolve))
  } finally {
    clearTimeout(bound)
  }
  return { closedAfterMs: performance.now() - t0, written: socket.bytesWritten }
}

describe('handshake guard', () => {
  it('150 idle connections from another address do not lock a legitimate peer out', async () => {
    const { target, client, port } = await targetAndClient()
    const flood = new RawFlood({
      host: '127.0.0.1',
      port,
      localAddresses: ['127.0.0.2'],
      perAddress: 150,
      reopenMs: 1_000,
    })
    cleanups.push(() => flood.stop())
    flood.start()
    await sleep(1_500)
    const result = await legitConnects(client, target, 5, 5_000)
    console.log(
      `# under a flood of 150 idle connections: ${result.ok}/5 legitimate connections, slowest ${result.worstMs.toFixed(0)} ms; flood opened ${flood.opened}, ${flood.closedByServer} closed by the node`,
    )
    assert.equal(result.ok, 5, result.errors.join('; '))
  })

  it('idle connections from many addresses, over the overall cap, still leave room', async () => {
    const { target, client, port } = await targetAndClient()
    // 10 addresses × 30: each address under its own cap, 300 in all over the cap of 128.
    const flood = new RawFlood({
      host: '127.0.0.1',
      port,
      localAddresses: Array.from({ length: 10 }, (_, i) => `127.0.0.${i + 2}`),
      perAddress: 30,
      reopenMs: 1_000,
    })
    cleanups.push(() => flood.stop())
    flood.start()
    await sleep(1_500)
    const result = await legitConnects(client, target, 5, 5_000)
    console.log(
      `# under a flood of 300 idle connections from 10 addresses: ${result.ok}/5 legitimate connections, slowest ${result.worstMs.toFixed(0)} ms`,
    )
    assert.equal(result.ok, 5, result.errors.join('; '))
  })

  it('bytes from an outsider (garbage, half a nonce, a flood of writes) are cut within the bound', async () => {
    const { target, client, port } = await targetAndClient()
    const boundMs = INBOUND_HANDSHAKE_TIMEOUT_MS + 2_500
    const garbage = await outsider(port, (s) => s.write(randomBytes(1_000)), 20_000)
    const halfNonce = await outsider(port, (s) => s.write(randomBytes(12)), 20_000)
    const chunk = randomBytes(1024 * 1024)
    const huge = await outsider(
      port,
      (s) => {
        const pump = (): void => {
          while (!s.destroyed && s.write(chunk)) {}
        }
        s.on('drain', pump)
        pump()
      },
      20_000,
    )
    console.log(
      `# closed by the node after: garbage ${garbage.closedAfterMs.toFixed(0)} ms, half a nonce ${halfNonce.closedAfterMs.toFixed(0)} ms, writes ${huge.closedAfterMs.toFixed(0)} ms (${huge.written} bytes written)`,
    )
    for (const [what, r] of Object.entries({ garbage, halfNonce, huge })) {
      assert.ok(r.closedAfterMs < boundMs, `${what}: closed after ${r.closedAfterMs} ms`)
    }
    assert.ok(
      halfNonce.closedAfterMs >= INBOUND_HANDSHAKE_TIMEOUT_MS - 500,
      'a silent socket waits out the bound',
    )
    // What the node read of the flood before closing is bounded by its buffers, not by time.
    assert.ok(huge.written < 64 * 1024 * 1024, `${huge.written} bytes written`)
    const result = await legitConnects(client, target, 2, 5_000)
    assert.equal(result.ok, 2, result.errors.join('; '))
  })
})

describe('outbound handshake', () => {
  it('a dial to a listener that accepts and never sends its nonce gives up, not hangs', async () => {
    const sockets = new Set<Socket>()
    const silent = createServer((s) => {
      sockets.add(s)
      s.on('error', () => {})
      s.on('close', () => sockets.delete(s))
      s.resume() // reads (and drops) the client's nonce, so its FIN is seen
    })
    cleanups.push(async () => {
      for (const s of sockets) s.destroy()
      await new Promise((resolve) => silent.close(resolve))
    })
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    const { port } = silent.address() as { port: number }
    const client = await startNode(generatePsk(), [])
    // The caller allows a minute; libp2p's per-address dial timeout (6 s) ends it.
    const t0 = performance.now()
    await assert.rejects(
      client.libp2p.dial(multiaddr(`/ip4/127.0.0.1/tcp/${port}`), {
        signal: AbortSignal.timeout(60_000),
      }),
    )
    const ms = performance.now() - t0
    assert.ok(ms < 30_000, `gave up after ${ms.toFixed(0)} ms`)
    // and closed its socket
    for (let i = 0; i < 100 && sockets.size > 0; i++) await sleep(100)
    assert.equal(sockets.size, 0)
  })
})
