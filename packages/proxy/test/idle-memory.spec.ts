import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { test } from 'node:test'
import { promisify } from 'node:util'
import { startIdleMemoryRelease } from '../src/idle-memory.ts'

/** Drives the policy by hand: `load` is the utilisation the next sample sees. */
function harness(minGapMs = 30_000) {
  let load = 0
  let clock = 0
  let releases = 0
  const ticks: (() => void)[] = []
  const realSetInterval = globalThis.setInterval
  globalThis.setInterval = ((fn: () => void) => {
    ticks.push(fn)
    return { unref() {} } as NodeJS.Timeout
  }) as typeof setInterval
  try {
    startIdleMemoryRelease({
      minGapMs,
      utilization: () => load,
      release: () => releases++,
      now: () => clock,
    })
  } finally {
    globalThis.setInterval = realSetInterval
  }
  return {
    sample(utilization: number, advanceMs = 2000) {
      load = utilization
      clock += advanceMs
      ticks[0]()
      return releases
    },
  }
}

test('memory is released once when start-up is over and once after each burst of work', () => {
  const h = harness()
  assert.equal(h.sample(0.9), 0, 'not while busy')
  assert.equal(h.sample(0.01), 1, 'idle after start-up')
  for (let i = 0; i < 20; i++) assert.equal(h.sample(0.02), 1, 'staying idle costs nothing')
  h.sample(0.5)
  assert.equal(h.sample(0.01), 2, 'idle after a burst')
})

test('bursts closer together than the minimum gap cause one release per gap', () => {
  const h = harness(30_000)
  h.sample(0.01) // start-up release
  let releases = 1
  for (let i = 0; i < 30; i++) {
    h.sample(0.5, 1000)
    releases = h.sample(0.01, 1000)
  }
  // 60 s of alternating busy and idle seconds: a release every 30 s at most.
  assert.ok(releases <= 3, `${releases} releases`)
})

test('the real release lowers the private memory a burst of garbage left behind', async () => {
  // A child allocates as a proxy under load does, then reports Private_Dirty before and
  // after the release this module would run.
  const script = `
    import { readFileSync } from 'node:fs'
    import { startIdleMemoryRelease } from ${JSON.stringify(new URL('../src/idle-memory.ts', import.meta.url).href)}
    const priv = () => Number(/Private_Dirty:\\s+(\\d+)/.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'))[1]) * 1024
    let keep = []
    for (let i = 0; i < 200_000; i++) { keep.push({ i, s: 'x' + i }); if (keep.length > 50_000) keep = [] }
    keep = null
    const before = priv()
    startIdleMemoryRelease({ sampleMs: 10, minGapMs: 0, utilization: () => 0 })
    await new Promise((r) => setTimeout(r, 200))
    console.log(JSON.stringify({ before, after: priv() }))
    process.exit(0)
  `
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--max-semi-space-size=4', '--input-type=module', '-e', script],
    { timeout: 60_000 },
  )
  const { before, after } = JSON.parse(stdout) as { before: number; after: number }
  assert.ok(before - after > 2e6, `private memory ${before} → ${after} bytes`)
})
