import assert from 'node:assert/strict'
import { stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { findProviders, formatSwarmKey, generatePsk, type MeshNode, provide } from '@mtc/p2pnode'
import { startLoopbackNode } from '@mtc/p2pnode/testing'
import {
  freePort,
  httpGet,
  metricValue,
  type Proc,
  readLinesWhenReady,
  run,
  runToEnd,
  stopAll,
  tempDir,
  waitFor,
} from '@mtc/testkit'

let dir: { path: string; remove: () => Promise<void> }
let pskFile: string
const psk = generatePsk()
const nodes: MeshNode[] = []

before(async () => {
  dir = await tempDir()
  pskFile = join(dir.path, 'swarm.key')
  await writeFile(pskFile, formatSwarmKey(psk), { mode: 0o600 })
})

after(async () => {
  await Promise.all(nodes.map((n) => n.stop()))
  await stopAll()
  await dir.remove()
})

let seq = 0
/** Starts ping-monitor as a real process; resolves once its addr file is written. */
async function startMonitor(
  extra: string[] = [],
): Promise<{ proc: Proc; addr: string; metrics: string; addrFile: string }> {
  const port = await freePort()
  const addrFile = join(dir.path, `addr-${seq++}`)
  const proc = run('ping-monitor', [
    '--psk-file',
    pskFile,
    '--listen',
    '/ip4/127.0.0.1/tcp/0',
    '--metrics',
    `127.0.0.1:${port}`,
    '--addr-file',
    addrFile,
    '--interval',
    '200ms',
    ...extra,
  ])
  const lines = await readLinesWhenReady(addrFile).catch((err: Error) => {
    throw new Error(`${err.message}\n${proc.stderr()}`)
  })
  return { proc, addr: lines[0], metrics: `http://127.0.0.1:${port}`, addrFile }
}

async function startPeer(bootstraps: string[]): Promise<MeshNode> {
  const node = await startLoopbackNode({
    role: 'allocator',
    bootstraps,
    psk,
    bootstrapBackoffMs: { initial: 50, max: 500 },
  })
  nodes.push(node)
  return node
}

describe('ping-monitor', () => {
  it('exports RTT gauges for a connected peer, with its role, and drops them after it leaves', async () => {
    const pm = await startMonitor(['--peer-expiry', '1s'])
    const peer = await startPeer([pm.addr])
    const id = peer.peerId.toString()
    const text = await waitFor('RTT series of the peer', async () => {
      const { body } = await httpGet(`${pm.metrics}/metrics`)
      return metricValue(body, 'mtc_ping_monitor_peer_rtt_seconds', { peer: id }) != null
        ? body
        : undefined
    })
    const rtt = metricValue(text, 'mtc_ping_monitor_peer_rtt_seconds', {
      peer: id,
      role: 'allocator',
    })
    const srtt = metricValue(text, 'mtc_ping_monitor_peer_rtt_smoothed_seconds', { peer: id })
    assert.ok(rtt != null && rtt > 0 && rtt < 1, `rtt ${rtt}`)
    assert.ok(srtt != null && srtt > 0 && srtt < 1, `srtt ${srtt}`)
    assert.equal(metricValue(text, 'mtc_ping_monitor_connected_peers'), 1)
    // The libp2p stack's own metrics are exported too.
    assert.match(text, /^libp2p_/m)

    const peers = JSON.parse((await httpGet(`${pm.metrics}/peers`)).body) as Array<{
      peerId: string
    }>
    assert.deepEqual(
      peers.map((p) => p.peerId),
      [id],
    )
    assert.equal((await httpGet(`${pm.metrics}/healthz`)).status, 200)

    await peer.stop()
    await waitFor('series of the departed peer removed', async () => {
      const { body } = await httpGet(`${pm.metrics}/metrics`)
      return metricValue(body, 'mtc_ping_monitor_peer_rtt_seconds', { peer: id }) == null
    })
    assert.equal(await pm.proc.stop(), 0)
  })

  it('a redundant bootstrap keeps the DHT working after the first ping-monitor is killed', async () => {
    const pm1 = await startMonitor()
    const pm2 = await startMonitor(['--bootstrap', pm1.addr])
    const a = await startPeer([pm1.addr, pm2.addr])
    const b = await startPeer([pm1.addr, pm2.addr])
    await waitFor(
      'peers connected to both bootstraps',
      () => a.connectedBootstraps().length === 2 && b.connectedBootstraps().length === 2,
    )
    await pm1.proc.kill()
    await waitFor('loss of pm1 noticed', () => a.connectedBootstraps().length === 1)
    await waitFor('a provides through pm2', async () => {
      await provide(a.libp2p, 'service', 'after-failover', { signal: AbortSignal.timeout(3000) })
      return true
    })
    const found = await waitFor('b finds a through the DHT', async () => {
      const p = await findProviders(b.libp2p, 'service', 'after-failover', {
        signal: AbortSignal.timeout(3000),
      })
      return p.length > 0 ? p : undefined
    })
    assert.equal(found[0].toString(), a.peerId.toString())
    await pm2.proc.stop()
  })

  it('keeps its peer ID across restarts with --key-file (mode 0600)', async () => {
    const keyFile = join(dir.path, 'pm.key')
    const first = await startMonitor(['--key-file', keyFile])
    assert.equal(await first.proc.stop(), 0)
    assert.equal((await stat(keyFile)).mode & 0o777, 0o600)
    const second = await startMonitor(['--key-file', keyFile])
    const idOf = (addr: string) => addr.split('/p2p/')[1]
    assert.ok(idOf(first.addr).startsWith('12D3Koo'))
    assert.equal(idOf(second.addr), idOf(first.addr))
    assert.equal(await second.proc.stop(), 0)
  })

  it('writes the --announce addresses, not the listen address, to its addr file', async () => {
    const pm = await startMonitor(['--announce', '/ip4/192.0.2.7/tcp/4001'])
    assert.match(pm.addr, /^\/ip4\/192\.0\.2\.7\/tcp\/4001\/p2p\/12D3Koo\w+$/)
    assert.equal(await pm.proc.stop(), 0)
  })

  it('stops gracefully on SIGINT too', async () => {
    const pm = await startMonitor()
    pm.proc.child.kill('SIGINT')
    assert.equal(await pm.proc.exited, 0)
  })
})

describe('ping-monitor command line', () => {
  const badPsk = () => join(dir.path, 'bad.key')
  for (const [what, args, pattern] of [
    ['an unknown flag', ['--bogus'], /Unknown option '--bogus'/],
    [
      'a bad multiaddr',
      ['--no-psk', '--listen', 'not-an-addr'],
      /--listen: "not-an-addr" is not a valid multiaddr/,
    ],
    ['a bad bootstrap', ['--no-psk', '--bootstrap', '/ip4/1.2.3.4/tcp/x'], /--bootstrap/],
    [
      'a bad announce address',
      ['--no-psk', '--announce', 'nowhere'],
      /--announce: "nowhere" is not a valid multiaddr/,
    ],
    ['a bad PSK file', ['--psk-file', 'BAD'], /not a swarm key file/],
    ['a missing PSK file', ['--psk-file', '/nonexistent/swarm.key'], /cannot read PSK file/],
    ['no PSK at all', [], /no private-network key/],
    ['both --psk and --no-psk', ['--psk', 'x', '--no-psk'], /contradicts/],
    ['a bad interval', ['--no-psk', '--interval', 'soon'], /--interval: "soon" is not a duration/],
    [
      'a bad metrics port',
      ['--no-psk', '--metrics', '99999'],
      /--metrics: "99999" is not a TCP port/,
    ],
    ['a bad log level', ['--no-psk', '--log-level', 'loud'], /--log-level/],
  ] as Array<[string, string[], RegExp]>) {
    it(`exits 2 with one line on ${what}`, async () => {
      await writeFile(badPsk(), 'this is not a key\n')
      const argv = args.map((a) => (a === 'BAD' ? badPsk() : a))
      const { code, stderr } = await runToEnd('ping-monitor', argv, {
        env: { P2P_PSK: '', P2P_PSK_FILE: '' },
      })
      assert.equal(code, 2, stderr)
      assert.equal(stderr.trimEnd().split('\n').length, 1, stderr)
      assert.match(stderr, pattern)
      assert.match(stderr, /^ping-monitor: /)
    })
  }

  it('prints help and version and exits 0', async () => {
    const help = await runToEnd('ping-monitor', ['--help'])
    assert.equal(help.code, 0)
    assert.match(help.stdout, /--psk-file PATH/)
    const version = await runToEnd('ping-monitor', ['--version'])
    assert.equal(version.code, 0)
    assert.match(version.stdout, /^ping-monitor \d+\.\d+\.\d+/)
  })
})
