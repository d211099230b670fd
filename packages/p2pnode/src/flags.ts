import { parseArgs } from 'node:util'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { UsageError } from './errors.ts'

export interface FlagSpec {
  type: 'string' | 'boolean'
  multiple?: boolean
  /** Placeholder shown in help, e.g. `MULTIADDR`. */
  arg?: string
  help: string
}

export type FlagSpecs = Record<string, FlagSpec>

export interface CommandSpec {
  name: string
  summary: string
  /** Usage line after the command name, e.g. `[flags] PORT [SERVICE ADDRESS]`. */
  usage: string
  flags: FlagSpecs
  /** Allowed positional argument counts. */
  positionals?: { min: number; max: number }
  /** Extra help text after the flags (environment, examples). */
  epilog?: string
}

export type FlagValues = Record<string, string | boolean | string[] | undefined>

export type ParsedCommandLine =
  | { kind: 'run'; values: FlagValues; positionals: string[] }
  | { kind: 'help' }
  | { kind: 'version' }

const COMMON_FLAGS: FlagSpecs = {
  help: { type: 'boolean', help: 'show this help and exit' },
  version: { type: 'boolean', help: 'print the version and exit' },
}

/** Parses argv strictly; unknown flags and missing values become one-line UsageErrors. */
export function parseCommandLine(spec: CommandSpec, argv: string[]): ParsedCommandLine {
  const flags = { ...spec.flags, ...COMMON_FLAGS }
  let parsed: ReturnType<typeof parseArgs>
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: true,
      allowNegative: false,
      options: Object.fromEntries(
        Object.entries(flags).map(([name, f]) => [
          name,
          { type: f.type, multiple: f.multiple === true },
        ]),
      ),
    })
  } catch (err) {
    throw new UsageError(cleanParseArgsMessage((err as Error).message))
  }
  if (parsed.values.help === true) return { kind: 'help' }
  if (parsed.values.version === true) return { kind: 'version' }
  const { min, max } = spec.positionals ?? { min: 0, max: 0 }
  if (parsed.positionals.length < min || parsed.positionals.length > max) {
    throw new UsageError(
      parsed.positionals.length > max
        ? `unexpected argument "${parsed.positionals[max]}" (usage: ${spec.name} ${spec.usage})`
        : `missing argument (usage: ${spec.name} ${spec.usage})`,
    )
  }
  return { kind: 'run', values: parsed.values as FlagValues, positionals: parsed.positionals }
}

/** parseArgs explains itself over several lines; keep the first sentence. */
function cleanParseArgsMessage(message: string): string {
  const first = message.split('\n')[0]
  return first.replace(/\. To specify a positional argument.*$/, '')
}

export function helpText(spec: CommandSpec, version: string): string {
  const flags = { ...spec.flags, ...COMMON_FLAGS }
  const rows = Object.entries(flags).map(([name, f]) => {
    const left = `  --${name}${f.type === 'string' ? ` ${f.arg ?? 'VALUE'}` : ''}`
    const rep = f.multiple === true ? ' (repeatable)' : ''
    return `${left.padEnd(34)} ${f.help}${rep}`
  })
  return [
    `${spec.name} ${version} — ${spec.summary}`,
    '',
    `Usage: ${spec.name} ${spec.usage}`,
    '',
    'Flags:',
    ...rows,
    ...(spec.epilog != null ? ['', spec.epilog] : []),
    '',
  ].join('\n')
}

// --- value parsers: each throws a UsageError naming the flag ---

export function parseMultiaddrFlag(flag: string, value: string): Multiaddr {
  try {
    return multiaddr(value)
  } catch {
    throw new UsageError(`--${flag}: "${value}" is not a valid multiaddr`)
  }
}

export function parsePositiveNumberFlag(flag: string, value: string): number {
  const n = Number(value)
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) {
    throw new UsageError(`--${flag}: "${value}" is not a positive number`)
  }
  return n
}

export function parsePortNumber(flag: string, value: string, allowZero = false): number {
  const n = Number(value)
  if (!/^\d+$/.test(value) || n > 65535 || (n === 0 && !allowZero)) {
    throw new UsageError(`${flag}: "${value}" is not a TCP port`)
  }
  return n
}

/** `[HOST:]PORT`; `[::1]:9100` for IPv6. The host defaults to all interfaces. */
export function parseHostPort(
  flag: string,
  value: string,
  defaultHost = '0.0.0.0',
): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]:|([^:]+):)?(\d+)$/.exec(value)
  if (m == null) throw new UsageError(`--${flag}: "${value}" is not [HOST:]PORT`)
  return { host: m[1] ?? m[2] ?? defaultHost, port: parsePortNumber(`--${flag}`, m[3], true) }
}

/** Durations: `500ms`, `1s`, `10m`, `1h`, or a bare number of seconds. Returns ms. */
export function parseDurationFlag(flag: string, value: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(value.trim())
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }
  if (m == null || Number(m[1]) <= 0) {
    throw new UsageError(`--${flag}: "${value}" is not a duration (e.g. 500ms, 1s, 10m)`)
  }
  return Number(m[1]) * unit[(m[2] ?? 's') as keyof typeof unit]
}
