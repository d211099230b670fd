/**
 * `pnpm bench`: every benchmark in turn, each its own process printing its own table, then
 * one table with the rows of issue #7 (figure, baseline measured in the same run, ratio,
 * target, met/MISSED). Writes each benchmark's bench/results/<name>.json and all of them
 * with the summary to bench/results/<YYYY-MM-DD>.json. Exits 1 when a benchmark failed
 * (not when a target is missed: the figures are the result).
 *
 *   node bench/src/suite.ts
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { keepResult, machine, RESULTS_DIR, type Row, table, writeResult } from './stats.ts'

/** In the order they run; the summary lists the rows with a target in SUMMARY_ORDER. */
const BENCHES = ['foundation', 'registry', 'proxy', 'coldstart'] as const
const SUMMARY_ORDER = ['proxy', 'coldstart', 'registry', 'foundation'] as const

interface Outcome {
  name: string
  code: number
  seconds: number
  results?: { date: string; rows: Row[] }
}

let current: ChildProcess | undefined
for (const signal of ['SIGINT', 'SIGTERM'] as const)
  process.on(signal, () => {
    // The running benchmark stops what it started, then the suite ends with it.
    if (current == null) process.exit(128 + (signal === 'SIGINT' ? 2 : 15))
    current.kill(signal)
    current.once('exit', () => process.exit(128 + (signal === 'SIGINT' ? 2 : 15)))
  })

/** Runs bench/src/<name>.ts with its results written to `dir`. */
async function runBench(name: string, dir: string): Promise<Outcome> {
  const t0 = performance.now()
  const child = spawn(process.execPath, [join(import.meta.dirname, `${name}.ts`)], {
    stdio: 'inherit',
    env: { ...process.env, BENCH_RESULTS_DIR: dir },
  })
  current = child
  const code = await new Promise<number>((resolve) =>
    child.on('exit', (c, signal) => resolve(c ?? (signal != null ? 128 : 1))),
  )
  current = undefined
  const seconds = (performance.now() - t0) / 1000
  const file = join(dir, `${name}.json`)
  const results = await readFile(file, 'utf8')
    .then((t) => JSON.parse(t) as Outcome['results'])
    .catch(() => undefined)
  if (results != null) await keepResult(file)
  return { name, code, seconds, results: code === 0 ? results : undefined }
}

const dir = await mkdtemp(join(tmpdir(), 'mtc-bench-suite-'))
const t0 = performance.now()
const outcomes: Outcome[] = []
try {
  for (const name of BENCHES) outcomes.push(await runBench(name, dir))
} finally {
  await rm(dir, { recursive: true, force: true })
}
const totalSeconds = (performance.now() - t0) / 1000

const rows: Row[] = SUMMARY_ORDER.flatMap((name) => {
  const o = outcomes.find((x) => x.name === name)!
  if (o.results != null) return o.results.rows.filter((r) => r.target != null)
  return [{ what: `${name}: not measured`, value: `exited ${o.code}`, target: '–', met: false }]
})
const durations = outcomes.map((o) => `${o.name} ${o.seconds.toFixed(0)} s`).join(', ')
const load = loadavg()
  .map((l) => l.toFixed(1))
  .join(' ')
process.stdout.write(
  `\nissue #7 summary (${durations}; ${(totalSeconds / 60).toFixed(1)} min in all; ` +
    `load average ${load} on ${cpus().length} CPUs)\n${table(rows)}`,
)
const date = new Date().toISOString()
await writeResult(
  RESULTS_DIR,
  `${date.slice(0, 10)}.json`,
  `${JSON.stringify({ date, machine: machine(), totalSeconds, summary: rows, benches: outcomes }, null, 2)}\n`,
)
process.exit(outcomes.every((o) => o.results != null) ? 0 : 1)
