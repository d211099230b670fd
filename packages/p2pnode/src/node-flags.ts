/**
 * The memory settings every long-running daemon runs with. Measured on the proxy (client
 * and service side; RSS after 8 s idle and its peak at 1,000 req/s for 10 s; CPU per
 * request from utime+stime; each change run at the same time as the configuration without
 * it, 3–4 pairs, since CPU figures on this shared 2-core machine drift ±15 % between runs):
 *
 * - `--max-semi-space-size=4` caps V8's young generation at 2 × 4 MiB instead of letting it
 *   grow to 2 × 16 MiB. 1 MiB gave the smallest idle RSS but promoted so much to the old
 *   generation that RSS reached ~185 MB under wrk at 32 connections; 16 MiB: ~125 idle /
 *   ~145 loaded; 4 MiB: ~106 idle / ~120 loaded at the same CPU per request. 2 MiB: −5 MB
 *   idle, −8 MB loaded, but +3–9 % CPU per request (more scavenges), so not taken.
 * - `--heap-growing-percent=50`: after a full GC the old generation may grow to 1.5× the
 *   live size before the next one, instead of up to 4× (V8's factor on a machine with
 *   much memory). Without it the peak under load was bimodal: when the young generation
 *   happened to be small as the load began, promoted garbage piled up to ~145 MB instead
 *   of ~120. With it (and the arena cap below): −4.5 MB idle, −4 MB loaded, no spike, CPU
 *   per request unchanged at 1,000 req/s and under wrk -c32.
 * - `--incremental-marking-soft-trigger=80 --incremental-marking-hard-trigger=95`: a full
 *   GC's marking starts when the old generation reaches 80 % of its limit (95 %: at once).
 *   V8's own rule starts it once the space left is under the young generation's capacity,
 *   and with a heap this small (13 MB live, limit 25 MB: 12 MB left, `--trace-gc`) that is
 *   right after every full GC: a proxy relaying 100 MB ran ~11 full GCs on the way, the
 *   marking threads took ~25 % of its CPU, and the transfer ran at 150–226 MB/s. With the
 *   triggers: 0–1 full GC per 100 MB, 273–375 MB/s (loopback mesh, same runs), and the
 *   limit, hence the loaded heap, unchanged.
 * - `MALLOC_ARENA_MAX=2` (glibc): the V8 worker and libuv threads otherwise each get their
 *   own malloc arena (1–3 MB touched each); capped: −2 MB idle, −3 MB loaded, same CPU.
 * - `MALLOC_TRIM_THRESHOLD_=134217728 MALLOC_MMAP_THRESHOLD_=33554432` (glibc): memory
 *   freed under load stays in the C heap for the next buffers instead of going back to
 *   the kernel at every 128 KiB free at the heap's top (and blocks from 128 KiB up being
 *   mapped and unmapped each time). Every relayed byte passes through fresh buffers (a
 *   socket read, the pnet XOR, the Noise cipher), and on the CI machine, a VM whose host
 *   takes freed guest pages back, the first touch of a page costs ~50 µs (`perf` sees
 *   the faults in those three writes). Proxies relaying 100 MB, with and without, in the
 *   same runs: 18–88 against 0–15 page faults per MB, CPU 6.8 / 6.4 → 3.9 / 4.3 ms per
 *   MB (client / service; another run 5.5 / 6.2 → 4.3 / 4.4). The idle release's
 *   `malloc_trim(0)` (the proxy's idle-memory.ts) still hands it all back once idle.
 *
 * Not taken: `--memory-saver-mode` (Node 24 only; Node 22 exits with "bad option") gave
 * −11 MB idle and −8 MB loaded but +7–12 % CPU per request; `--optimize-for-size` +40 %
 * CPU; `--no-turbofan` saves 2.5 MB of the node binary's pages but its garbage raises the
 * loaded peak by 15 MB; `--jitless`/`--lite-mode` cannot run (no WebAssembly, which Noise
 * uses); `--single-threaded-gc`, `--v8-pool-size`, bytecode flushing flags: within ±1.5 MB.
 * What remains (~54 MB of it the node binary's own pages) is itemised in the proxy
 * README's "Memory".
 *
 * V8 sizes its heap at start-up and glibc reads its tunables before main(), so neither can
 * be set from inside a running process (v8.setFlagsFromString has no effect on them).
 * Deliberately free of other imports: a bin imports this first and re-executes before
 * loading the libp2p stack.
 */
export const DAEMON_NODE_FLAGS: readonly string[] = [
  '--max-semi-space-size=4',
  '--heap-growing-percent=50',
  '--incremental-marking-soft-trigger=80',
  '--incremental-marking-hard-trigger=95',
]

/** Environment every daemon runs with (see DAEMON_NODE_FLAGS); a value already set wins. */
export const DAEMON_ENV: Readonly<Record<string, string>> = {
  MALLOC_ARENA_MAX: '2',
  MALLOC_TRIM_THRESHOLD_: String(128 << 20),
  MALLOC_MMAP_THRESHOLD_: String(32 << 20),
}

interface ProcessLike {
  execPath: string
  execArgv: string[]
  argv: string[]
  env: NodeJS.ProcessEnv
}

/**
 * What to re-execute with when some of `flags` or `env` are missing: a flag counts as given
 * when the operator set it, with any value or as `--no-…`, on the command line or in
 * NODE_OPTIONS; a variable when it is set at all. Undefined when nothing is missing.
 */
export function reexecPlan(
  flags: readonly string[],
  env: Readonly<Record<string, string>>,
  proc: ProcessLike,
): { argv: string[]; env: NodeJS.ProcessEnv } | undefined {
  if (proc.argv[1] == null) return undefined
  const given = [...proc.execArgv, ...(proc.env.NODE_OPTIONS ?? '').split(/\s+/)]
  const name = (flag: string): string =>
    flag
      .split('=')[0]
      .replace(/_/g, '-')
      .replace(/^--no-/, '--')
  const missing = flags.filter((f) => !given.some((g) => name(g) === name(f)))
  const missingEnv = Object.entries(env).filter(([k]) => proc.env[k] == null)
  if (missing.length === 0 && missingEnv.length === 0) return undefined
  return {
    argv: [proc.execPath, ...missing, ...proc.execArgv, ...proc.argv.slice(1)],
    env: { ...proc.env, ...Object.fromEntries(missingEnv) },
  }
}

/**
 * Replaces this process (same PID, so signals and supervisors are unaffected) with one
 * that runs the same script under DAEMON_NODE_FLAGS and DAEMON_ENV, unless they are
 * already in effect. Where process.execve is missing (Node < 22.15, Windows) the process
 * goes on as it is.
 */
export function execWithDaemonFlags(
  flags: readonly string[] = DAEMON_NODE_FLAGS,
  env: Readonly<Record<string, string>> = DAEMON_ENV,
): void {
  if (typeof process.execve !== 'function') return
  const plan = reexecPlan(flags, env, process)
  if (plan == null) return
  try {
    process.execve(process.execPath, plan.argv, plan.env)
  } catch {
    // Not possible here (e.g. in a worker thread): run without the flags.
  }
}
