/**
 * The entrypoint of every mtc instance container (ENTRYPOINT of mtc/base; the service
 * command is the image's CMD). It starts the proxy in service mode from the environment
 * the allocator sets (see plan.ts), then the service command with the same environment;
 * forwards SIGTERM/SIGINT to both; when either child ends it stops the other and exits
 * with the code of the child that ended first (or the first non-zero one after a signal).
 * One line per child start and exit on stderr; a bad configuration: one line, exit 2.
 *
 * The swarm key is for the proxy alone: the entrypoint (root) copies the key files into a
 * tmpfs directory only the proxy's user may enter, runs the proxy as that user and the
 * service as another unprivileged one (plan.ts says which, and refuses what could read
 * the mounted files), with no_new_privs required so no binary of the image can regain
 * privileges.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chownSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { constants } from 'node:os'
import { join } from 'node:path'
import { type Command, type FileOwner, PlanError, PROXY_UID, plan, SECRETS_PARENT } from './plan.ts'

/**
 * Once stopping (a signal came, or one child ended), children still running after this
 * get SIGKILL: just under `docker stop`'s default 10 s grace, so the entrypoint reports
 * the exit codes itself; the proxy finishes in-flight requests within its own 10 s.
 */
const STOP_GRACE_MS = 9_000

function log(line: string): void {
  process.stderr.write(`mtc-entrypoint: ${line}\n`)
}

interface Child {
  name: string
  proc: ChildProcess
  running: boolean
  /** Exit code, 128 + signal number when killed, 126/127 when it could not start. */
  done: Promise<number>
}

function start(name: string, cmd: Command, shown: string[]): Child {
  const proc = spawn(cmd.file, cmd.args, {
    env: cmd.env,
    stdio: ['ignore', 'inherit', 'inherit'],
    uid: cmd.uid,
    gid: cmd.gid,
  })
  const child: Child = { name, proc, running: true, done: Promise.resolve(0) }
  child.done = new Promise<number>((resolve) => {
    proc.once('error', (err: NodeJS.ErrnoException) => {
      child.running = false
      log(`${name} could not start: ${err.message}`)
      resolve(err.code === 'ENOENT' ? 127 : 126)
    })
    proc.once('exit', (code, signal) => {
      child.running = false
      const status = code ?? 128 + (signal != null ? constants.signals[signal] : 0)
      log(`${name} exited with code ${status}${signal != null ? ` (${signal})` : ''}`)
      resolve(status)
    })
  })
  if (proc.pid != null) {
    const as = cmd.uid != null ? ` as ${cmd.uid}:${cmd.gid}` : ''
    log(`${name} started (pid ${proc.pid}${as}): ${shown.join(' ')}`)
  }
  return child
}

function owner(path: string): FileOwner | undefined {
  try {
    const { uid, gid, mode } = statSync(path)
    return { uid, gid, mode }
  } catch {
    return undefined
  }
}

function noNewPrivs(): boolean {
  try {
    return /^NoNewPrivs:\s*1$/m.test(readFileSync('/proc/self/status', 'utf8'))
  } catch {
    return false
  }
}

/** Copies the key files (readable by root) into `dir`, which only the proxy's user may enter. */
function copySecrets(dir: string, secrets: { from: string; to: string }[]): void {
  mkdirSync(dir, { mode: 0o700 }) // fails if it exists: nobody prepared it for us
  for (const { from, to } of secrets) {
    writeFileSync(to, readFileSync(from), { mode: 0o600, flag: 'wx' })
    chownSync(to, PROXY_UID, PROXY_UID)
  }
  chownSync(dir, PROXY_UID, PROXY_UID)
}

async function main(): Promise<number> {
  const secretsDir = join(SECRETS_PARENT, `mtc-proxy-${randomBytes(6).toString('hex')}`)
  let p: ReturnType<typeof plan>
  try {
    p = plan(process.env, {
      command: process.argv.slice(2),
      execPath: process.execPath,
      stat: owner,
      uid: process.getuid?.() ?? -1,
      noNewPrivs: noNewPrivs(),
      secretsDir,
    })
  } catch (err) {
    if (!(err instanceof PlanError)) throw err
    log(err.message)
    return 2
  }
  for (const notice of p.notices) log(notice)
  try {
    copySecrets(secretsDir, p.secrets)
  } catch (err) {
    log(`cannot give the proxy its keys in ${SECRETS_PARENT}: ${(err as Error).message}`)
    rmSync(secretsDir, { recursive: true, force: true })
    return 2
  }

  const children = [
    start('proxy', p.proxy, ['proxy', ...p.proxy.args.slice(1)]),
    start('service', p.service, [p.service.file, ...p.service.args]),
  ]
  let stopping = false
  let exitCode: number | undefined
  let killTimer: NodeJS.Timeout | undefined
  const stop = (signal: NodeJS.Signals): void => {
    stopping = true
    for (const c of children) if (c.running) c.proc.kill(signal)
    killTimer ??= setTimeout(() => {
      for (const c of children) {
        if (!c.running) continue
        log(`${c.name} still running after ${STOP_GRACE_MS} ms: SIGKILL`)
        c.proc.kill('SIGKILL')
      }
    }, STOP_GRACE_MS)
  }
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      log(`${signal}: stopping proxy and service`)
      stop(signal)
    })
  }
  for (const c of children) {
    void c.done.then((code) => {
      // The first child to end on its own decides; after a signal, the first failure.
      if (exitCode == null && (!stopping || code !== 0)) exitCode = code
      if (!stopping) stop('SIGTERM')
    })
  }
  await Promise.all(children.map((c) => c.done))
  clearTimeout(killTimer)
  rmSync(secretsDir, { recursive: true, force: true })
  return exitCode ?? 0
}

process.exit(await main())
