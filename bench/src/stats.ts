import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises'
import { arch, cpus, loadavg, totalmem } from 'node:os'
import { basename, join } from 'node:path'
import { REPO_ROOT } from '@mtc/testkit'

/** The q-quantile (0..1) of samples, nearest-rank. */
export function quantile(samples: number[], q: number): number {
  if (samples.length === 0) return Number.NaN
  const sorted = [...samples].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]
}

/** Runs `op` `n` times in sequence; returns each duration in ms. */
export async function timeEach(n: number, op: (i: number) => Promise<unknown>): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < n; i++) {
    const t0 = performance.now()
    await op(i)
    out.push(performance.now() - t0)
  }
  return out
}

export interface Row {
  what: string
  value: string
  baseline?: string
  ratio?: string
  /** The goal from issue #7; rows with one make up the suite's summary table. */
  target?: string
  /** Whether `value` meets `target`; absent when the target is only to report. */
  met?: boolean
}

export function summary(samples: number[]): { p50: number; p99: number } {
  return { p50: quantile(samples, 0.5), p99: quantile(samples, 0.99) }
}

export const ms = (v: number): string => `${v.toFixed(3)} ms`

const COLUMNS = ['what', 'value', 'baseline', 'ratio', 'target', 'met'] as const

/** met / MISSED, or – where the target is only to report the figure. */
export const verdict = (r: Row): string =>
  r.met == null ? (r.target != null ? '–' : '') : r.met ? 'met' : 'MISSED'

/** The rows as a text table; the target columns only when some row has a target. */
export function table(rows: Row[]): string {
  const n = rows.some((r) => r.target != null) ? COLUMNS.length : 4
  const cells = [
    COLUMNS.slice(0, n) as readonly string[],
    ...rows.map((r) =>
      [r.what, r.value, r.baseline ?? '', r.ratio ?? '', r.target ?? '', verdict(r)].slice(0, n),
    ),
  ]
  const w = cells[0].map((_, i) => Math.max(...cells.map((c) => c[i].length)))
  const line = (c: readonly string[]) => c.map((x, i) => x.padEnd(w[i])).join(' | ')
  return [line(cells[0]), w.map((x) => '-'.repeat(x)).join('-|-'), ...cells.slice(1).map(line)]
    .map((l) => `${l.trimEnd()}\n`)
    .join('')
}

/** Where results are kept; git-ignored, so absent in a fresh clone: made by the writers. */
export const RESULTS_DIR = join(REPO_ROOT, 'bench', 'results')

/** Writes `text` to `dir/name`, making `dir` first; returns the file's path. */
export async function writeResult(dir: string, name: string, text: string): Promise<string> {
  await mkdir(dir, { recursive: true })
  const file = join(dir, name)
  await writeFile(file, text)
  return file
}

/** Copies a results file into `dir` (made when missing) under its own name; returns the copy. */
export async function keepResult(file: string, dir = RESULTS_DIR): Promise<string> {
  await mkdir(dir, { recursive: true })
  const copy = join(dir, basename(file))
  await copyFile(file, copy)
  return copy
}

export function machine() {
  return {
    cpus: cpus().length,
    cpu: cpus()[0]?.model,
    memoryBytes: totalmem(),
    arch: arch(),
    node: process.version,
    /** 1, 5 and 15 min load averages when the figures were written: > cpus means contention. */
    loadavg: loadavg().map((l) => Number(l.toFixed(2))),
  }
}

/**
 * Prints the table and writes <name>.json with the machine and date to bench/results/, or
 * to BENCH_RESULTS_DIR (the suite's own directory, so a bench run elsewhere at the same
 * time cannot stand in for the suite's).
 */
export async function report(name: string, rows: Row[], raw: unknown): Promise<void> {
  process.stdout.write(`\n${name}\n${table(rows)}`)
  await writeResult(
    process.env.BENCH_RESULTS_DIR ?? RESULTS_DIR,
    `${name}.json`,
    `${JSON.stringify({ name, date: new Date().toISOString(), machine: machine(), rows, raw }, null, 2)}\n`,
  )
}

/** The resident set size of process `pid` in bytes (VmRSS in /proc/<pid>/status). */
export async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const kb = /VmRSS:\s+(\d+)/.exec(status)?.[1]
  if (kb == null) throw new Error(`no VmRSS for process ${pid}`)
  return Number(kb) * 1024
}

/** What process `pid` has used so far (/proc/<pid>/stat, one read): CPU time (user +
 * system) in ms, and page faults that needed no disk (minflt). On a VM that hands freed
 * guest memory back to its host each fault can cost tens of µs (the first touch of a
 * page: ~50 µs on the CI machine). */
export async function procStat(pid: number): Promise<{ cpuMs: number; minorFaults: number }> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  // Fields after the command (which may hold spaces) start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const ticks = Number(fields[11]) + Number(fields[12]) // utime, stime (fields 14, 15)
  return { cpuMs: (ticks * 1000) / CLOCK_TICKS_PER_SECOND, minorFaults: Number(fields[7]) }
}

/** CPU time (user + system) process `pid` has used so far, in ms. */
export async function cpuMs(pid: number): Promise<number> {
  return (await procStat(pid)).cpuMs
}

/** Linux's USER_HZ, the unit of /proc/<pid>/stat's times, on every architecture we run. */
const CLOCK_TICKS_PER_SECOND = 100

/** Memory only process `pid` uses (Private_Dirty in /proc/<pid>/smaps_rollup), in bytes:
 * what another process cannot share, unlike RSS's mapped code and libraries. */
export async function privateDirtyBytes(pid: number): Promise<number> {
  const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8')
  const kb = /Private_Dirty:\s+(\d+)/.exec(rollup)?.[1]
  if (kb == null) throw new Error(`no Private_Dirty for process ${pid}`)
  return Number(kb) * 1024
}

/**
 * Runs `body`, then `cleanup` — also when it throws, and on SIGINT/SIGTERM (then exits
 * 128+signal), so no process or container a bench started outlives it. A repeated signal
 * (a terminal's Ctrl-C reaches a launcher and the bench both) does not cut the cleanup short.
 */
export async function withCleanup<T>(cleanup: () => Promise<void>, body: () => Promise<T>) {
  let cleaning: Promise<void> | undefined
  const once = () => {
    cleaning ??= cleanup()
    return cleaning
  }
  const onSignal = (signal: NodeJS.Signals) => {
    if (cleaning != null) return
    process.stderr.write(`${signal}: stopping what the bench started\n`)
    void once().finally(() => process.exit(128 + (signal === 'SIGINT' ? 2 : 15)))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  try {
    return await body()
  } finally {
    await once()
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}
