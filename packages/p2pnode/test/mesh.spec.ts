import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { defaultLogger } from '@libp2p/logger'
import { freePort, tempDir, waitFor } from '@mtc/testkit'
import { multiaddr } from '@multiformats/multiaddr'
import { Announcer } from '../src/announcer.ts'
import { findProviders, provide } from '../src/discovery.ts'
import { keygenMain } from '../src/keygen.ts'
import type { MeshNode } from '../src/node.ts'
import { derivePsk, generatePsk, type Psk, parseSwarmKey } from '../src/psk.ts'
import { startLoopbackNode } from '../src/testing.ts'

const started: MeshNode[] = []
after(async () => {
  await Promise.all(started.map((n) => n.stop()))
})

async function startNode(init: {
  psk: Psk | undefined
  bootstraps?: string[]
  privateKey?: PrivateKey
  port?: number
  announce?: string[]
  addrFile?: string
}): Promise<MeshNode> {
  const { port = 0, ...rest } = init
  const node = await startLoopbackNode({
    ...rest,
    listen: [`/ip4/127.0.0.1/tcp/${port}`],
    bootstrapBackoffMs: { initial: 50, max: 200 },
  })
  started.push(node)
  return node
}

const TEST_PROTOCOL = '/mtc/test-echo/1.0.0'

/** Counts streams a node accepts on a test protocol: none may open through a bad PSK. */
async function countStreams(node: MeshNode): Promise<{ count: number }> {
  const counter = { count: 0 }
  await node.libp2p.handle(TEST_PROTOCOL, (stream) => {
    counter.count++
    stream.abort(new Error('test'))
  })
  return counter
}

describe('private network', () => {
  it('peers with the same PSK connect and ping with a sub-second RTT', async () => {
    const psk = generatePsk()
    const a = await startNode({ psk })
    const b = await startNode({ psk })
    const t0 = performance.now()
    await b.libp2p.dial(a.libp2p.getMultiaddrs()[0])
    const connectMs = performance.now() - t0
    const rtt = await b.rtt(a.peerId)
    assert.ok(rtt > 0 && rtt < 1, `rtt ${rtt}`)
    assert.ok(connectMs < 5000)
    // The standard libp2p ping answers too.
    assert.ok((await b.libp2p.services.ping.ping(a.peerId)) >= 0)
  })

  it('a peer with another PSK cannot connect, and no stream is ever opened', async () => {
    const a = await startNode({ psk: generatePsk() })
    const counter = await countStreams(a)
    const b = await startNode({ psk: generatePsk() })
    await assert.rejects(
      b.libp2p.dialProtocol(a.libp2p.getMultiaddrs()[0], TEST_PROTOCOL, {
        signal: AbortSignal.timeout(8000),
      }),
    )
    assert.equal(counter.count, 0)
    assert.equal(a.libp2p.getConnections(b.peerId).length, 0)
    assert.equal(b.libp2p.getConnections(a.peerId).length, 0)
  })

  it('a --no-psk peer cannot join a PSK mesh', async () => {
    const a = await startNode({ psk: generatePsk() })
    const counter = await countStreams(a)
    const open = await startNode({ psk: undefined })
    await assert.rejects(
      open.libp2p.dialProtocol(a.libp2p.getMultiaddrs()[0], TEST_PROTOCOL, {
        signal: AbortSignal.timeout(8000),
      }),
    )
    assert.equal(counter.count, 0)
    assert.equal(a.libp2p.getConnections().length, 0)
  })

  it('a swarm key made from a passphrase interoperates with --psk of that passphrase', async () => {
    let text = ''
    const code = await keygenMain(['swarm-key', '--psk', 'correct horse'], {
      stdout: (t) => {
        text += t
      },
      stderr: () => {},
    })
    assert.equal(code, 0)
    const fromFile = await startNode({ psk: parseSwarmKey(text) })
    const fromPassphrase = await startNode({ psk: await derivePsk('correct horse') })
    await fromPassphrase.libp2p.dial(fromFile.libp2p.getMultiaddrs()[0])
    assert.ok((await fromPassphrase.rtt(fromFile.peerId)) > 0)
  })
})

describe('connection bursts', () => {
  it('accepts 30 peers from one host connecting at once (instances share their host IP)', async () => {
    const psk = generatePsk()
    const hub = await startNode({ psk })
    const peers = await Promise.all(Array.from({ length: 30 }, () => startNode({ psk })))
    await Promise.all(peers.map((p) => p.libp2p.dial(hub.libp2p.getMultiaddrs()[0])))
    // The dialling side resolves first; the hub registers the last ones a moment later.
    await waitFor('all 30 peers connected at the hub', () => hub.libp2p.getPeers().length === 30)
  })
})

describe('bootstraps', () => {
  it('connects to every bootstrap and reconnects after losing one', async () => {
    const psk = generatePsk()
    const key = await generateKeyPair('Ed25519')
    const port = await freePort()
    const boot1 = await startNode({ psk, privateKey: key, port })
    const boot2 = await startNode({ psk })
    const addr1 = boot1.multiaddrs()[0]
    const addr2 = boot2.multiaddrs()[0]
    const peer = await startNode({ psk, bootstraps: [addr1, addr2] })
    await waitFor('both bootstraps connected', () => peer.connectedBootstraps().length === 2)

    await boot1.stop()
    await waitFor('loss noticed', () => peer.connectedBootstraps().length === 1)
    // The same identity comes back on the same port, as a restarted bootstrap does.
    await startNode({ psk, privateKey: key, port })
    await waitFor('bootstrap 1 reconnected', () => peer.connectedBootstraps().includes(addr1))
  })
})

describe('announced addresses', () => {
  it('peers learn only the announced address, never the listen address', async () => {
    const psk = generatePsk()
    const dir = await tempDir('mtc-announce-')
    try {
      const port = await freePort()
      // Where a port forward would lead to it; TEST-NET-1, so nothing answers there.
      const announced = '/ip4/192.0.2.7/tcp/4001'
      const addrFile = join(dir.path, 'addr')
      const hidden = await startNode({ psk, port, announce: [announced], addrFile })
      const full = `${announced}/p2p/${hidden.peerId}`
      assert.deepEqual(hidden.multiaddrs(), [full])
      assert.equal(await readFile(addrFile, 'utf8'), `${full}\n`)
      // A peer that reaches it anyway (as through the forward) learns, by identify, the
      // announced address only.
      const peer = await startNode({ psk })
      await peer.libp2p.dial(multiaddr(`/ip4/127.0.0.1/tcp/${port}/p2p/${hidden.peerId}`))
      const known = await waitFor('identify of the hidden node', async () => {
        const addrs = (await peer.libp2p.peerStore.get(hidden.peerId)).addresses
        const listed = addrs.map((a) => a.multiaddr.toString())
        return listed.includes(announced) ? listed : undefined
      })
      assert.deepEqual(known, [announced])
    } finally {
      await dir.remove()
    }
  })
})

describe('DHT discovery', () => {
  it('finds a provider through the private DHT', async () => {
    const psk = generatePsk()
    const boot = await startNode({ psk })
    const addr = boot.multiaddrs()[0]
    const a = await startNode({ psk, bootstraps: [addr] })
    const b = await startNode({ psk, bootstraps: [addr] })
    await waitFor(
      'bootstraps connected',
      () => a.connectedBootstraps().length === 1 && b.connectedBootstraps().length === 1,
    )
    await waitFor('provide', async () => {
      await provide(a.libp2p, 'service', 'hello', { signal: AbortSignal.timeout(3000) })
      return true
    })
    const found = await waitFor('provider found', async () => {
      const peers = await findProviders(b.libp2p, 'service', 'hello', {
        signal: AbortSignal.timeout(3000),
      })
      return peers.length > 0 ? peers : undefined
    })
    assert.deepEqual(
      found.map((p) => p.toString()),
      [a.peerId.toString()],
    )
    const none = await findProviders(b.libp2p, 'service', 'nobody', {
      signal: AbortSignal.timeout(3000),
    })
    assert.equal(none.length, 0)
  })
})

describe('Announcer', () => {
  it('announces a key added before any peer exists once peers join', async () => {
    const psk = generatePsk()
    const boot = await startNode({ psk })
    const early = await startNode({ psk })
    const announcer = new Announcer(early.libp2p, defaultLogger().forComponent('test'))
    announcer.start()
    announcer.add('allocator')
    try {
      // Only now does the early node join the mesh, followed by a node that looks it up.
      await early.libp2p.dial(boot.libp2p.getMultiaddrs()[0])
      const late = await startNode({ psk, bootstraps: [boot.multiaddrs()[0]] })
      const found = await waitFor('the early announcement', async () => {
        const p = await findProviders(late.libp2p, 'allocator', '', {
          signal: AbortSignal.timeout(2000),
        })
        return p.length > 0 ? p : undefined
      })
      assert.equal(found[0].toString(), early.peerId.toString())
    } finally {
      await announcer.stop()
    }
  })
})
