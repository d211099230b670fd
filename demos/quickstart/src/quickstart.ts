import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { exitWith, formatSwarmKey, generatePsk } from '@mtc/p2pnode'

/**
 * The quickstart: a ping-monitor bootstrap on :4001 (metrics :9100) and two peers
 * (redundant ping-monitors) on a fresh private network, then the bootstrap's RTT table.
 */
const ROOT = resolve(import.meta.dirname, '../../../..')
const BIN = join(ROOT, 'node_modules', '.bin')
const BOOTSTRAP_PORT = 4001
const METRICS_PORT = 9100
const ONCE_TIMEOUT_MS = 30_000

interface PeerRow {
  peerId: string
  role?: string
  rttSeconds?: number
  smoothedRttSeconds?: number
}

const say = (s: string): void => {
  process.stdout.write(`${s}\n`)
}

async function main(): Promise<number> {
  let once = false
  try {
    const { values } = parseArgs({
      options: { once: { type: 'boolean' }, help: { type: 'boolean' } },
      strict: true,
    })
    if (values.help === true) {
      say(
        'Usage: scripts/demo.sh [--once]\n  --once  run the scenario, print the RTTs and exit (0 on success)',
      )
      return 0
    }
    once = values.once === true
  } catch (err) {
    process.stderr.write(`quickstart: ${(err as Error).message}\n`)
    return 2
  }

  const dir = await mkdtemp(join(tmpdir(), 'mtc-quickstart-'))
  const children: ChildProcess[] = []
  const stopAll = async (): Promise<void> => {
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((ok) => {
            if (c.exitCode != null || c.signalCode != null) return ok()
            c.once('close', () => ok())
            c.kill('SIGTERM')
          }),
      ),
    )
    await rm(dir, { recursive: true, force: true })
  }
  const start = (name: string, args: string[]): void => {
    const child = spawn(join(BIN, 'ping-monitor'), args, { stdio: ['ignore', 'ignore', 'pipe'] })
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      for (const line of d.trimEnd().split('\n')) process.stderr.write(`  [${name}] ${line}\n`)
    })
    child.on('exit', (code) => {
      if (code !== 0 && code !== null) process.stderr.write(`  [${name}] exited with ${code}\n`)
    })
    children.push(child)
  }

  let interrupted = false
  const onSignal = (): void => {
    interrupted = true
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)

  try {
    const pskFile = join(dir, 'swarm.key')
    await writeFile(pskFile, formatSwarmKey(generatePsk()), { mode: 0o600 })
    say(`1. private network key: ${pskFile} (new, random)`)
    const addrFile = join(dir, 'bootstrap.addr')
    start('bootstrap', [
      '--psk-file',
      pskFile,
      '--listen',
      `/ip4/127.0.0.1/tcp/${BOOTSTRAP_PORT}`,
      '--metrics',
      `127.0.0.1:${METRICS_PORT}`,
      '--addr-file',
      addrFile,
    ])
    const bootstrap = await waitFor('the bootstrap to listen', 15_000, async () => {
      const text = await readFile(addrFile, 'utf8').catch(() => '')
      return text.split('\n')[0] || undefined
    })
    say(`2. bootstrap (ping-monitor) at ${bootstrap}`)
    for (const name of ['peer-1', 'peer-2']) {
      start(name, [
        '--psk-file',
        pskFile,
        '--listen',
        '/ip4/127.0.0.1/tcp/0',
        '--metrics',
        '127.0.0.1:0',
        '--bootstrap',
        bootstrap,
      ])
    }
    say('3. two peers joining through the bootstrap')
    const rows = await waitFor('both peers to report an RTT', 20_000, async () => {
      const peers = await fetchPeers()
      return peers.filter((p) => p.rttSeconds != null).length >= 2 ? peers : undefined
    })
    say(`4. RTTs measured by the bootstrap (http://127.0.0.1:${METRICS_PORT}/peers):`)
    printTable(rows)
    say(`   Prometheus metrics: curl -s 127.0.0.1:${METRICS_PORT}/metrics | grep mtc_ping_monitor`)
    if (once) return 0
    say('Running; Ctrl-C stops everything.')
    while (!interrupted) {
      await sleep(5000)
      if (!interrupted) printTable(await fetchPeers().catch(() => []))
    }
    return 0
  } catch (err) {
    process.stderr.write(`quickstart: ${(err as Error).message}\n`)
    return 1
  } finally {
    await stopAll()
    say('stopped everything the demo started')
  }

  async function waitFor<T>(
    what: string,
    ms: number,
    check: () => Promise<T | undefined>,
  ): Promise<T> {
    const deadline = Date.now() + Math.min(ms, ONCE_TIMEOUT_MS)
    while (Date.now() < deadline && !interrupted) {
      const v = await check().catch(() => undefined)
      if (v !== undefined) return v
      await sleep(200)
    }
    throw new Error(interrupted ? 'interrupted' : `timed out waiting for ${what}`)
  }
}

async function fetchPeers(): Promise<PeerRow[]> {
  const res = await fetch(`http://127.0.0.1:${METRICS_PORT}/peers`, {
    signal: AbortSignal.timeout(2000),
  })
  return (await res.json()) as PeerRow[]
}

function printTable(rows: PeerRow[]): void {
  const ms = (s?: number): string => (s == null ? '-' : `${(s * 1000).toFixed(3)} ms`)
  say(
    `   ${'peer'.padEnd(54)} ${'role'.padEnd(14)} ${'rtt'.padStart(10)} ${'smoothed'.padStart(10)}`,
  )
  for (const r of rows) {
    say(
      `   ${r.peerId.padEnd(54)} ${(r.role ?? '?').padEnd(14)} ${ms(r.rttSeconds).padStart(10)} ${ms(r.smoothedRttSeconds).padStart(10)}`,
    )
  }
}

exitWith(await main())
