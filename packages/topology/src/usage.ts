import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { pidsIn } from './processes.ts'

/**
 * What the processes of one simulated host cost: CPU time, memory, and the bytes on its
 * WAN interface, read from /proc (synchronously: a sample is one instant). Every process
 * in the host's network namespace counts, children included (etcd, containerd, shims and
 * the containers, which use the host's network).
 */

export interface ProcUsage {
  pid: number
  /** `comm` of the process (node daemons are told apart by the caller, by pid). */
  comm: string
  /** User + system CPU since the process started, in seconds. */
  cpuS: number
  /** Resident memory (KiB), and its proportional share: pages shared with N processes count 1/N. */
  rssKiB: number
  pssKiB: number
}

export interface HostUsage {
  at: number
  procs: ProcUsage[]
  /** Bytes through the host's WAN interface (IP packets, all protocols). */
  rxBytes: number
  txBytes: number
}

let ticksPerSecond: number | undefined
function clockTicks(): number {
  ticksPerSecond ??=
    Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100
  return ticksPerSecond
}

function readProc(pid: number): ProcUsage | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // comm is in parentheses and may hold spaces: the fields count from the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const cpuS = (Number(fields[11]) + Number(fields[12])) / clockTicks() // utime, stime
    const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8')
    const kib = (name: string) =>
      Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(rollup)?.[1] ?? 0)
    const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim()
    return { pid, comm, cpuS, rssKiB: kib('Rss'), pssKiB: kib('Pss') }
  } catch {
    return undefined // gone meanwhile
  }
}

/** `/proc/<pid>/net/dev` shows the namespace of that pid: the WAN device's counters. */
function wanBytes(pid: number, wanIf: string): { rx: number; tx: number } {
  try {
    for (const line of readFileSync(`/proc/${pid}/net/dev`, 'utf8').split('\n')) {
      const [name, rest] = line.split(':')
      if (name?.trim() !== wanIf || rest == null) continue
      const f = rest.trim().split(/\s+/).map(Number)
      return { rx: f[0], tx: f[8] }
    }
  } catch {
    // gone
  }
  return { rx: Number.NaN, tx: Number.NaN }
}

/** One sample of every process in the namespace `netns`, whose WAN device is `wanIf`. */
export function sampleHost(netns: string, wanIf: string): HostUsage {
  const procs = pidsIn(netns)
    .map(readProc)
    .filter((p): p is ProcUsage => p != null)
  let bytes = { rx: Number.NaN, tx: Number.NaN }
  for (const p of procs) {
    bytes = wanBytes(p.pid, wanIf)
    if (!Number.isNaN(bytes.rx)) break
  }
  return { at: performance.now(), procs, rxBytes: bytes.rx, txBytes: bytes.tx }
}

/** CPU share (seconds per second, 1 = one core) per process between two samples. */
export function cpuRates(a: HostUsage, b: HostUsage): Map<number, number> {
  const s = (b.at - a.at) / 1000
  const before = new Map(a.procs.map((p) => [p.pid, p.cpuS]))
  const out = new Map<number, number>()
  for (const p of b.procs) {
    const was = before.get(p.pid)
    if (was != null) out.set(p.pid, (p.cpuS - was) / s)
  }
  return out
}

/**
 * Bytes sent and received per libp2p protocol between two scrapes of a daemon's
 * `libp2p_data_transfer_bytes_total{protocol="<id> sent|received"}` (`global` is the
 * whole connection, encryption and muxing included).
 */
export function transferByProtocol(before: string, after: string): Map<string, number> {
  const read = (text: string) => {
    const m = new Map<string, number>()
    for (const line of text.split('\n')) {
      const r = /^libp2p_data_transfer_bytes_total\{protocol="([^"]*)"\}\s+(\S+)/.exec(line)
      if (r != null) m.set(r[1], Number(r[2]))
    }
    return m
  }
  const a = read(before)
  const out = new Map<string, number>()
  for (const [k, v] of read(after)) out.set(k, v - (a.get(k) ?? 0))
  return out
}
