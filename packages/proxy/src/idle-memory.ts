import { performance } from 'node:perf_hooks'
import { getHeapStatistics, setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { loadMallocTrim, type MallocTrim } from './malloc-trim.ts'

/** How often the event loop's utilisation is sampled. */
const SAMPLE_MS = 2000
/** Below this share of a sample spent running JavaScript, the proxy counts as idle
 * (an idle proxy's own background work, DHT and liveness checks, is ~1–4 %). */
const IDLE_UTILIZATION = 0.05
/** At most one release after traffic per this interval, whatever its pattern (repeats
 * below come only without traffic). */
const MIN_GAP_MS = 30_000
/**
 * After REPEAT_GAP_MS without a request or a relayed byte, the release repeats once V8's
 * heap grew this much since the last one, at most once per REPEAT_GAP_MS. An idle proxy's
 * own background work (mostly the probes of the services it used in the last minute, then
 * libp2p's DHT and connection upkeep) grows the heap back: after one release the bench's client proxy
 * climbed 33.9 → 43.4 → 50.1 MB in 30 s (the proxy README's "Memory"). Under light
 * traffic, under 5 % busy too, it does not repeat: its synchronous GCs (tens of ms) would
 * land between requests.
 */
const REGROWTH_BYTES = 4 * 1024 * 1024
const REPEAT_GAP_MS = 10_000

export interface IdleMemoryOptions {
  sampleMs?: number
  idleUtilization?: number
  minGapMs?: number
  /** Utilisation of the event loop since the previous call, 0–1. */
  utilization?: () => number
  /** Time since the last request or relayed byte, 0 while one is open (ms). Without it
   * the release never repeats. */
  quietMs?: () => number
  /** The size of V8's heap now (committed, all spaces). */
  heapBytes?: () => number
  regrowthBytes?: number
  repeatGapMs?: number
  release?: () => void
  now?: () => number
  /** Told once, on the first release, when the C heap cannot be trimmed, and why. */
  log?: (formatter: string, ...args: unknown[]) => void
}

/**
 * Gives the memory a burst of work left behind back to the system once the proxy is idle:
 * V8 keeps the young generation at the size start-up or load grew it to and the old
 * generation's free pages committed, and only a memory-reducing GC (what V8 runs on a
 * low-memory notification) returns them; an idle process allocates too little to ever
 * start one. Measured on a loopback mesh after 20 s idle: private memory 41.6–43.2 →
 * 39.3–39.9 MB per proxy (the proxy README's "Memory"). Then glibc's `malloc_trim(0)`
 * gives back the C heap's free pages, which a burst of traffic leaves by the tens of MB
 * (malloc-trim.ts says why).
 * Runs once per busy → idle transition, at most once per `minGapMs`; then again, after
 * `repeatGapMs` without any traffic (`quietMs`), whenever the heap grew by `regrowthBytes`
 * since the last release, at most once per `repeatGapMs`.
 */
export function startIdleMemoryRelease(options: IdleMemoryOptions = {}): () => void {
  const idleUtilization = options.idleUtilization ?? IDLE_UTILIZATION
  const minGapMs = options.minGapMs ?? MIN_GAP_MS
  const utilization = options.utilization ?? eventLoopUtilization()
  const release = options.release ?? memoryRelease(options.log)
  const now = options.now ?? Date.now
  const quietMs = options.quietMs ?? (() => 0)
  const heapBytes = options.heapBytes ?? (() => getHeapStatistics().total_heap_size)
  const regrowthBytes = options.regrowthBytes ?? REGROWTH_BYTES
  const repeatGapMs = options.repeatGapMs ?? REPEAT_GAP_MS
  let busySinceRelease = true
  // The gap after a burst counts from the last release after one: repeats (no traffic)
  // must not hold back the release the next burst calls for.
  let lastAfterBusy = Number.NEGATIVE_INFINITY
  let lastRelease = Number.NEGATIVE_INFINITY
  let heapAfterRelease = 0
  const afterBusy = (): boolean => busySinceRelease && now() - lastAfterBusy >= minGapMs
  const repeat = (): boolean =>
    now() - lastRelease >= repeatGapMs &&
    quietMs() >= repeatGapMs &&
    heapBytes() - heapAfterRelease >= regrowthBytes
  const tick = (): void => {
    if (utilization() > idleUtilization) {
      busySinceRelease = true
      return
    }
    const wasBusy = afterBusy()
    if (!wasBusy && !repeat()) return
    release()
    if (wasBusy) lastAfterBusy = now()
    busySinceRelease = false
    lastRelease = now()
    heapAfterRelease = heapBytes()
    utilization() // the GC's own time is not traffic
  }
  const timer = setInterval(tick, options.sampleMs ?? SAMPLE_MS)
  timer.unref()
  return () => clearInterval(timer)
}

function eventLoopUtilization(): () => number {
  let last = performance.eventLoopUtilization()
  return () => {
    const current = performance.eventLoopUtilization()
    const { utilization } = performance.eventLoopUtilization(current, last)
    last = current
    return utilization
  }
}

/**
 * The release: V8's memory-reducing GC, then `malloc_trim(0)` (after the GC, which frees
 * the C memory of the Buffers it collects). The addon is loaded on the first release, not
 * at start-up; where it cannot be, the release is the GC alone.
 */
export function memoryRelease(
  log: (formatter: string, ...args: unknown[]) => void = () => {},
  loadTrim: typeof loadMallocTrim = loadMallocTrim,
): () => void {
  const gc = memoryReducingGc()
  let trim: MallocTrim | undefined
  let loaded = false
  return () => {
    gc()
    if (!loaded) {
      loaded = true
      const result = loadTrim()
      if ('trim' in result) trim = result.trim
      else log('idle memory release without malloc_trim (V8 only): %s', result.error)
    }
    trim?.()
  }
}

/** V8's `gc` function, reached without putting it on this context's global object; the
 * `last-resort` flavour is V8's CollectAllAvailableGarbage (memory-reducing full GCs). */
export function memoryReducingGc(): () => void {
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as (o: object) => void
  return () => gc({ type: 'major', execution: 'sync', flavor: 'last-resort' })
}
