import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { test } from 'node:test'
import { promisify } from 'node:util'
import { tempDir } from '@mtc/testkit'
import { memoryRelease, startIdleMemoryRelease } from '../src/idle-memory.ts'
import { installedKoffiAddon, loadMallocTrim } from '../src/malloc-trim.ts'

/** Drives the policy by hand: `load` is the utilisation the next sample sees, `heap` the
 * heap's size (MiB), `traffic()` a request now. */
function harness(minGapMs = 30_000) {
  let load = 0
  let clock = 0
  let releases = 0
  let heap = 20
  let lastTraffic = 0
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
      quietMs: () => clock - lastTraffic,
      heapBytes: () => heap * 1024 * 1024,
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
    heap(mib: number) {
      heap = mib
    },
    traffic() {
      lastTraffic = clock
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

test('with no traffic at all, a heap that grows back is released again, at most every 10 s', () => {
  const h = harness()
  assert.equal(h.sample(0.01), 1, 'idle after start-up')
  h.heap(23)
  for (let i = 0; i < 10; i++) assert.equal(h.sample(0.02), 1, 'grown by less than 4 MiB')
  h.heap(24)
  assert.equal(h.sample(0.02), 2, 'grown by 4 MiB: released again')
  h.heap(28) // 4 MiB over the size measured just after that release
  assert.equal(h.sample(0.02, 8000), 2, 'not within 10 s of the last release')
  assert.equal(h.sample(0.02), 3, '10 s after it')
})

test('light traffic, under the idle threshold too, stops the repeats', () => {
  const h = harness()
  assert.equal(h.sample(0.01), 1, 'idle after start-up')
  h.heap(40)
  let releases = 1
  for (let i = 0; i < 20; i++) {
    h.traffic() // a request every 2 s: under 5 % busy, but not idle
    releases = h.sample(0.03)
  }
  assert.equal(releases, 1)
  // The traffic stops: released again once 10 s went by without a request.
  // The last request came just before the last busy sample: 4, 6, 8 s quiet, then 10.
  for (let i = 0; i < 3; i++) assert.equal(h.sample(0.01), 1, `${2 * i + 4} s quiet`)
  assert.equal(h.sample(0.01), 2, '10 s quiet')
})

test('a repeat does not hold back the release after the next burst', () => {
  const h = harness()
  h.traffic()
  assert.equal(h.sample(0.01), 1, 'idle after start-up (t = 2 s)')
  h.heap(30)
  for (let i = 0; i < 4; i++) h.sample(0.01)
  assert.equal(h.sample(0.01), 2, '10 s without traffic: a repeat (t = 12 s)')
  for (let i = 0; i < 10; i++) {
    h.traffic()
    h.sample(0.5) // a burst, t = 14–32 s
  }
  // 30 s after the start-up release, though only 22 s after the repeat.
  assert.equal(h.sample(0.01), 3, 'released after the burst (t = 34 s)')
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

const MB = 1e6

/** Runs c-heap-burst.ts with the daemons' malloc setting; its Private_Dirty figures. */
async function cHeapBurst(mode: 'trim' | 'gc-only') {
  const { stdout, stderr } = await promisify(execFile)(
    process.execPath,
    ['--max-semi-space-size=4', new URL('./c-heap-burst.ts', import.meta.url).pathname, mode],
    { timeout: 120_000, env: { ...process.env, MALLOC_ARENA_MAX: '2' } },
  )
  const r = JSON.parse(stdout) as { baseline: number; settled: number; released: number }
  const mb = (n: number) => (n / MB).toFixed(1)
  return {
    ...r,
    text: `${mode}: ${mb(r.baseline)} → ${mb(r.settled)} → ${mb(r.released)} MB ${stderr}`,
  }
}

test('after a burst of relayed traffic the release gives the freed C heap back', async () => {
  // Control: the C heap keeps what the burst freed and V8's GC alone returns little of it
  // (so the drop below is malloc_trim's, not the GC's). "Little" is a share, not a size:
  // in one CI run the GC's own sweep returned 11.8 of 91.4 MB.
  const gcOnly = await cHeapBurst('gc-only')
  assert.ok(
    gcOnly.settled - gcOnly.baseline > 30 * MB,
    `the burst left freed memory: ${gcOnly.text}`,
  )
  assert.ok(
    gcOnly.settled - gcOnly.released < (gcOnly.settled - gcOnly.baseline) / 4,
    `V8's GC returns less than a quarter of it: ${gcOnly.text}`,
  )
  const trim = await cHeapBurst('trim')
  assert.ok(trim.settled - trim.baseline > 30 * MB, `the burst left freed memory: ${trim.text}`)
  assert.ok(
    trim.released - trim.baseline < (trim.settled - trim.baseline) / 4,
    `the release returns at least three quarters of it: ${trim.text}`,
  )
})

test('malloc_trim loads from the installed koffi on this glibc Linux and runs', () => {
  assert.ok(installedKoffiAddon() != null, 'koffi has a prebuilt addon for this platform')
  const loaded = loadMallocTrim()
  assert.ok('trim' in loaded, 'error' in loaded ? loaded.error : '')
  assert.equal(typeof loaded.trim(), 'boolean')
})

test('without a usable addon loading says why, and the release is the GC alone', async () => {
  const dir = await tempDir('mtc-trim-')
  try {
    assert.deepEqual(loadMallocTrim([join(dir.path, 'koffi.node')]), {
      error: 'koffi addon not found',
    })
    const broken = join(dir.path, 'broken.node')
    await writeFile(broken, 'not an ELF file')
    const loaded = loadMallocTrim([broken])
    assert.ok('error' in loaded && loaded.error.startsWith(`${broken}: `), JSON.stringify(loaded))

    const logged: string[] = []
    let loads = 0
    const release = memoryRelease(
      (...args) => logged.push(args.join(' ')),
      () => {
        loads++
        return { error: 'no malloc_trim here' }
      },
    )
    for (let i = 0; i < 3; i++) release() // runs, does not throw
    assert.equal(loads, 1, 'loaded once')
    assert.equal(logged.length, 1, 'logged once')
    assert.match(logged[0], /without malloc_trim.*no malloc_trim here/)
  } finally {
    await dir.remove()
  }
})
