import { mkdir, writeFile } from 'node:fs/promises'
import { arch, cpus, totalmem } from 'node:os'
import { join } from 'node:path'
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
}

export function summary(samples: number[]): { p50: number; p99: number } {
  return { p50: quantile(samples, 0.5), p99: quantile(samples, 0.99) }
}

export const ms = (v: number): string => `${v.toFixed(3)} ms`

/** Prints the table and writes bench/results/<name>.json with the machine and date. */
export async function report(name: string, rows: Row[], raw: unknown): Promise<void> {
  const w = [0, 1, 2, 3].map((i) =>
    Math.max(
      ...[
        ['what', 'value', 'baseline', 'ratio'],
        ...rows.map((r) => [r.what, r.value, r.baseline ?? '', r.ratio ?? '']),
      ].map((c) => c[i].length),
    ),
  )
  const line = (c: string[]) => c.map((x, i) => x.padEnd(w[i])).join(' | ')
  process.stdout.write(
    `\n${name}\n${line(['what', 'value', 'baseline', 'ratio'])}\n${w.map((x) => '-'.repeat(x)).join('-|-')}\n`,
  )
  for (const r of rows)
    process.stdout.write(`${line([r.what, r.value, r.baseline ?? '', r.ratio ?? ''])}\n`)
  const dir = join(REPO_ROOT, 'bench', 'results')
  await mkdir(dir, { recursive: true })
  const machine = {
    cpus: cpus().length,
    cpu: cpus()[0]?.model,
    memoryBytes: totalmem(),
    arch: arch(),
    node: process.version,
  }
  await writeFile(
    join(dir, `${name}.json`),
    `${JSON.stringify({ name, date: new Date().toISOString(), machine, rows, raw }, null, 2)}\n`,
  )
}
