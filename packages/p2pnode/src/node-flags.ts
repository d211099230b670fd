/**
 * Node flags every long-running daemon runs with. `--max-semi-space-size=4` caps V8's
 * young generation at 2 × 4 MiB instead of letting it grow to 2 × 16 MiB. Measured on the
 * proxy (client and service side, wrk at 32 connections): 1 MiB gave the smallest idle
 * RSS (~100 MB) but promoted so much to the old generation that RSS reached ~185 MB under
 * load; 16 MiB: ~125 idle / ~145 loaded; 4 MiB: ~107 idle / ~128 loaded at the same CPU
 * per request. V8 sizes its heap at start-up, so the flag cannot be set from inside a
 * running process (v8.setFlagsFromString has no effect on it).
 *
 * Deliberately free of other imports: a bin imports this first and re-executes before
 * loading the libp2p stack.
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4']

/**
 * The argv to re-execute with when some of `flags` are missing (a flag counts as given
 * when the operator set it, with any value, on the command line or in NODE_OPTIONS);
 * undefined when nothing is missing.
 */
export function reexecArgv(
  flags: readonly string[],
  proc: { execPath: string; execArgv: string[]; argv: string[]; env: NodeJS.ProcessEnv },
): string[] | undefined {
  const given = [...proc.execArgv, ...(proc.env.NODE_OPTIONS ?? '').split(/\s+/)]
  const name = (flag: string): string => flag.split('=')[0].replace(/_/g, '-')
  const missing = flags.filter((f) => !given.some((g) => name(g) === name(f)))
  if (missing.length === 0 || proc.argv[1] == null) return undefined
  return [proc.execPath, ...missing, ...proc.execArgv, ...proc.argv.slice(1)]
}

/**
 * Replaces this process (same PID, so signals and supervisors are unaffected) with one
 * that runs the same script under DAEMON_NODE_FLAGS, unless they are already in effect.
 * Where process.execve is missing (Node < 22.15, Windows) the process goes on as it is.
 */
export function execWithDaemonFlags(flags: readonly string[] = DAEMON_NODE_FLAGS): void {
  if (typeof process.execve !== 'function') return
  const argv = reexecArgv(flags, process)
  if (argv == null) return
  try {
    process.execve(process.execPath, argv, process.env)
  } catch {
    // Not possible here (e.g. in a worker thread): run without the flags.
  }
}
