import { chmod, copyFile, mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'

/**
 * What systemd would run for an installed unit, for a test without systemd as PID 1: the
 * ExecStart= of the unit's [Service] with the specifiers and variables these units use
 * (%d: credentials directory, %S: state root, $VAR: split into words, ${VAR}: one word)
 * expanded from its EnvironmentFile=s; LoadCredential= files copied into the
 * credentials directory and StateDirectory= created, as systemd does before starting it.
 */
export interface UnitCommand {
  argv: string[]
  env: Record<string, string>
}

/** The [Service] section's settings, each key with its values in order. */
export function serviceSettings(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>()
  let section = ''
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue
    const header = /^\[(.+)\]$/.exec(line)
    if (header != null) {
      section = header[1]
      continue
    }
    if (section !== 'Service') continue
    const eq = line.indexOf('=')
    const key = line.slice(0, eq)
    out.set(key, [...(out.get(key) ?? []), line.slice(eq + 1)])
  }
  return out
}

/** KEY=VALUE lines of an environment file (quotes around a value removed). */
export function parseEnvFile(text: string): Record<string, string> {
  const env: Record<string, string> = {}
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    const eq = line.indexOf('=')
    if (eq < 1) throw new Error(`not KEY=VALUE: ${line}`)
    env[line.slice(0, eq)] = line.slice(eq + 1).replace(/^"(.*)"$|^'(.*)'$/, '$1$2')
  }
  return env
}

export async function unitCommand(
  unitFile: string,
  dirs: { credentials: string; stateRoot: string },
): Promise<UnitCommand> {
  const settings = serviceSettings(await readFile(unitFile, 'utf8'))
  const env: Record<string, string> = {}
  for (const f of settings.get('EnvironmentFile') ?? []) {
    Object.assign(env, parseEnvFile(await readFile(f.replace(/^-/, ''), 'utf8')))
  }
  await mkdir(dirs.credentials, { recursive: true, mode: 0o700 })
  for (const spec of settings.get('LoadCredential') ?? []) {
    const [name, source] = spec.split(':')
    await copyFile(source, join(dirs.credentials, name))
    await chmod(join(dirs.credentials, name), 0o400)
  }
  for (const d of settings.get('StateDirectory') ?? []) {
    await mkdir(join(dirs.stateRoot, d), { recursive: true, mode: 0o700 })
  }
  const execStart = settings.get('ExecStart')
  if (execStart?.length !== 1) throw new Error(`${unitFile}: one ExecStart= expected`)
  const specifiers = (word: string) =>
    word.replace(/%([dS%])/g, (_, s: string) =>
      s === 'd' ? dirs.credentials : s === 'S' ? dirs.stateRoot : '%',
    )
  const argv = execStart[0]
    .split(/\s+/)
    .flatMap((word): string[] => {
      const split = /^\$([A-Za-z_][A-Za-z0-9_]*)$/.exec(word)
      if (split != null) return (env[split[1]] ?? '').split(/\s+/).filter((w) => w !== '')
      return [word.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, v: string) => env[v] ?? '')]
    })
    .map(specifiers)
  return { argv, env }
}
