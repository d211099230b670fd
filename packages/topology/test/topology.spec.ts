import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { formatSwarmKey, generatePsk } from '@mtc/p2pnode'
import { type Proc, readLinesWhenReady, tempDir, waitFor } from '@mtc/testkit'
import {
  listNetns,
  parseSpec,
  type RttMeasurement,
  rttWithinTolerance,
  Topology,
  type TopologySpec,
} from '../src/index.ts'
import { fourHosts } from './scenario-helpers.ts'

/** The issue's four hosts: RTTs from the client 5 (near), 40 (far) and 10 ms (registry). */
const SPEC: TopologySpec = fourHosts()

/**
 * In the mesh scenario the bootstrap probes its peers this often and /peers is sampled this
 * often; the other ping-monitors probe rarely, to leave the 2 cores to the one measuring.
 */
const BOOTSTRAP_INTERVAL = '200ms'
const PEER_INTERVAL = '5s'
const PEERS_SAMPLE_MS = 200
/** Samples of /peers whose median is compared with the matrix, after a warm-up (JIT, DHT). */
const PEERS_WARMUP_MS = 2_000
const PEERS_SAMPLES = 16
/** Rounds of samples at most, while a peer's RTT is out of tolerance. */
const PEERS_ROUNDS = 3
/** A ping-monitor next to the bootstrap, on the registry host: the stack's own RTT. */
const TWIN = 'twin'

function table(rows: RttMeasurement[]): string {
  return rows
    .map(
      (r) =>
        `${`${r.a}-${r.b}`.padEnd(16)} configured ${String(r.configuredMs).padStart(3)} ms  ` +
        `measured ${r.medianMs.toFixed(2).padStart(6)} ms (min ${r.minMs.toFixed(2)}, ` +
        `max ${r.maxMs.toFixed(2)}, lost ${r.lost}, base ${r.baseMs.toFixed(2)}, ` +
        `attempts ${r.attempts})${r.ok ? '' : '  OUT OF TOLERANCE'}`,
    )
    .join('\n')
}

describe('topology spec', () => {
  it('reads RTT keys in either order, with dashes in host names, defaulting to 0', () => {
    const rtt = parseSpec({ hosts: ['a', 'b-1', 'c'], rtt: { 'b-1-a': 7 } })
    assert.deepEqual(rtt, [
      [0, 7, 0],
      [7, 0, 0],
      [0, 0, 0],
    ])
  })

  it('refuses bad specs', () => {
    assert.throws(() => parseSpec({ hosts: [] }), /hosts must be/)
    assert.throws(() => parseSpec({ hosts: ['a', 'a'] }), /twice/)
    assert.throws(() => parseSpec({ hosts: ['a/b'] }), /bad host name/)
    assert.throws(() => parseSpec({ hosts: ['a', 'b'], rtt: { 'a-x': 1 } }), /not "<host>-<host>"/)
    assert.throws(() => parseSpec({ hosts: ['a', 'b'], rtt: { 'a-b': -1 } }), /must be 0 to/)
  })

  it('tolerance is 20 %, or 1 ms for small values, plus the harness base above', () => {
    assert.ok(rttWithinTolerance(47.9, 40))
    assert.ok(!rttWithinTolerance(48.1, 40))
    assert.ok(rttWithinTolerance(0.9, 0))
    assert.ok(!rttWithinTolerance(6.1, 5))
    // The base the harness measured for itself widens the upper bound only.
    assert.ok(rttWithinTolerance(6.1, 5, 0.5))
    assert.ok(!rttWithinTolerance(6.6, 5, 0.5))
    assert.ok(!rttWithinTolerance(3.9, 5, 5))
    assert.ok(rttWithinTolerance(32.1, 40, 2))
    assert.ok(!rttWithinTolerance(29.9, 38, 2))
    assert.ok(rttWithinTolerance(6.1, 5, Number.NaN) === false)
  })
})

describe('topology', { timeout: 120_000 }, () => {
  let topo: Topology
  let dir: { path: string; remove: () => Promise<void> }

  before(async () => {
    dir = await tempDir()
    topo = await Topology.create(SPEC)
  })

  after(async () => {
    await topo?.destroy()
    await dir?.remove()
  })

  it('gives each host its own namespace and address', async () => {
    assert.equal(topo.address('client'), '10.99.0.1')
    assert.equal(topo.address('registry'), '10.99.0.4')
    const names = listNetns()
    for (const ns of topo.allNetns()) assert.ok(names.includes(ns), `${ns} missing`)
    const r = await topo.exec('near', 'ip', ['-4', '-o', 'addr', 'show', 'dev', 'wan-1'])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /inet 10\.99\.0\.2\/24/)
  })

  it('measured RTTs match the configured matrix within 20 % (or 1 ms)', async () => {
    const rows = await topo.measureMatrix()
    console.log(`RTT matrix:\n${table(rows)}`)
    assert.equal(rows.length, 6)
    for (const r of rows) assert.ok(r.ok, `${r.a}-${r.b}:\n${table(rows)}`)
    // The base probes do not take the pair's delay, and the measurements keep the pairs'
    // order: 5 and 10 ms below the least of the 40 ms one.
    const long = rows.filter((r) => r.configuredMs >= 30)
    assert.equal(long.length, 3)
    for (const r of long) assert.ok(r.baseMs < r.configuredMs / 2, table([r]))
    const at = (a: string, b: string) => rows.find((r) => r.a === a && r.b === b)!
    const far = at('client', 'far')
    for (const short of [at('client', 'near'), at('client', 'registry')]) {
      assert.ok(short.medianMs < far.minMs, table([short, far]))
    }
  })

  it('setRtt changes the measured RTT of that pair only', async () => {
    await topo.setRtt('client', 'near', 60)
    try {
      const changed = await topo.measureRtt('client', 'near')
      const other = await topo.measureRtt('client', 'registry')
      console.log(`after setRtt(client, near, 60):\n${table([changed, other])}`)
      assert.equal(changed.configuredMs, 60)
      assert.ok(changed.ok, table([changed]))
      assert.ok(other.ok, table([other]))
    } finally {
      await topo.setRtt('client', 'near', 5)
    }
    const back = await topo.measureRtt('near', 'client')
    assert.ok(back.ok, table([back]))
  })

  it('cut makes a host unreachable and restore brings it back', async () => {
    await topo.cut('far')
    try {
      const cut = await topo.measureRtt('client', 'far', { count: 3, attempts: 1 })
      assert.equal(cut.lost, 3, table([cut]))
      // The others still reach each other.
      const near = await topo.measureRtt('client', 'near')
      assert.ok(near.ok, table([near]))
    } finally {
      await topo.restore('far')
    }
    const back = await topo.measureRtt('client', 'far')
    assert.ok(back.ok, `${table([back])}\nforwarder: ${JSON.stringify(await topo.stats())}`)
  })

  it("ping-monitor on the registry host reports each peer's RTT as configured", async () => {
    const pskFile = join(dir.path, 'swarm.key')
    await writeFile(pskFile, formatSwarmKey(generatePsk()), { mode: 0o600 })
    const monitor = (host: string, bootstrap?: string, name = host, port = 4001): Proc =>
      topo.spawn(host, 'ping-monitor', [
        '--psk-file',
        pskFile,
        '--listen',
        `/ip4/${topo.address(host)}/tcp/${port}`,
        '--metrics',
        `127.0.0.1:${port + 5099}`,
        '--addr-file',
        join(dir.path, `${name}.addr`),
        '--interval',
        bootstrap == null ? BOOTSTRAP_INTERVAL : PEER_INTERVAL,
        '--log-level',
        'error',
        ...(bootstrap != null ? ['--bootstrap', bootstrap] : []),
      ])
    const boot = monitor('registry')
    const [bootAddr] = await readLinesWhenReady(join(dir.path, 'registry.addr')).catch(
      (err: Error) => {
        throw new Error(`${err.message}\n${boot.stderr()}`)
      },
    )
    assert.match(bootAddr, /^\/ip4\/10\.99\.0\.4\/tcp\/4001\/p2p\//)
    const others = ['client', 'near', 'far']
    // A twin on the registry host itself reaches the bootstrap without the forwarder: its
    // RTT is what the JS stack adds to every probe right now, the base of the others.
    const procs = [
      ...others.map((h) => monitor(h, bootAddr)),
      monitor('registry', bootAddr, TWIN, 4005),
    ]
    const peerIds = new Map<string, string>()
    for (const [i, h] of [...others, TWIN].entries()) {
      const [addr] = await readLinesWhenReady(join(dir.path, `${h}.addr`)).catch((err: Error) => {
        throw new Error(`${err.message}\n${procs[i].stderr()}`)
      })
      peerIds.set(addr.split('/p2p/')[1], h)
    }

    type Entry = { peerId: string; rttSeconds?: number }
    const peers = async () =>
      JSON.parse((await topo.httpGet('registry', 'http://127.0.0.1:9100/peers')).body) as Entry[]
    await waitFor(
      'an RTT for every peer on the bootstrap',
      async () => {
        const got = (await peers()).filter((p) => peerIds.has(p.peerId) && p.rttSeconds != null)
        return got.length === peerIds.size
      },
      { timeoutMs: 30_000, intervalMs: 250 },
    )
    await sleep(PEERS_WARMUP_MS)
    // The lower quartile: a probe's RTT also holds the JS stack's own time (pnet, Noise,
    // yamux, a fresh stream: ~0.6 ms at best, a median ~1.3 ms above the path on 2 busy
    // cores), which the lower quartile mostly leaves out while one slow sample cannot pass;
    // the twin's lower quartile is the base allowed on top. A round spoilt by a burst of
    // load elsewhere is sampled again, PEERS_ROUNDS at most; a wrong RTT is wrong in every
    // round.
    const round = async (): Promise<RttMeasurement[]> => {
      const samples = new Map<string, number[]>([...others, TWIN].map((h) => [h, []]))
      for (let i = 0; i < PEERS_SAMPLES; i++) {
        for (const p of await peers()) {
          const h = peerIds.get(p.peerId)
          if (h != null && p.rttSeconds != null) samples.get(h)!.push(p.rttSeconds * 1000)
        }
        await sleep(PEERS_SAMPLE_MS)
      }
      const quartile = (h: string) => {
        const s = samples.get(h)!.sort((x, y) => x - y)
        return s[Math.floor(s.length / 4)]
      }
      const baseMs = quartile(TWIN)
      return others.map((h): RttMeasurement => {
        const s = samples.get(h)!.sort((x, y) => x - y)
        const quartileMs = quartile(h)
        const configuredMs = topo.rtt('registry', h)
        return {
          a: 'registry',
          b: h,
          configuredMs,
          medianMs: quartileMs,
          minMs: s[0],
          maxMs: s.at(-1)!,
          lost: 0,
          baseMs,
          attempts: 1,
          ok: rttWithinTolerance(quartileMs, configuredMs, baseMs),
        }
      })
    }
    const best = new Map<string, RttMeasurement>()
    for (
      let r = 1;
      r <= PEERS_ROUNDS && [...best.values()].filter((m) => m.ok).length < others.length;
      r++
    ) {
      for (const m of await round()) {
        if (!best.get(m.b)?.ok) best.set(m.b, { ...m, attempts: r })
      }
    }
    const rows = others.map((h) => best.get(h)!)
    console.log(
      `ping-monitor /peers on the registry host (lower quartile of ${PEERS_SAMPLES} samples):\n` +
        table(rows),
    )
    for (const r of rows) assert.ok(r.ok, table(rows))
    for (const p of [...procs, boot]) assert.equal(await p.stop(), 0, p.stderr())
  })

  it('destroy leaves no namespace, link or process behind, and is idempotent', async () => {
    const echo = topo.spawn('client', 'sleep', ['30'])
    const names = topo.allNetns()
    const forwarder = topo.forwarderPid
    assert.ok(forwarder != null)
    await topo.destroy()
    await topo.destroy()
    assert.notEqual(await echo.exited, 0) // stopped by destroy
    const left = listNetns()
    for (const ns of names) assert.ok(!left.includes(ns), `${ns} still there`)
    const links = spawnSync('ip', ['-o', 'link'], { encoding: 'utf8' }).stdout
    assert.doesNotMatch(links, /wan-\d/)
    assert.throws(() => process.kill(forwarder, 0), /ESRCH/)
    await assert.rejects(topo.cut('client'), /destroyed/)
  })
})
