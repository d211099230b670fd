import type { Multiaddr } from '@multiformats/multiaddr'
import { type FlagValues, parseDurationFlag, parseMultiaddrFlag, parsePortNumber } from './flags.ts'

/**
 * A daemon's own flags, each read with the parser it needs (a bad value is a UsageError
 * naming the flag): undefined when not given, so a default reads `?? DEFAULT`. Every
 * daemon turns them into its frozen config with one of these before it starts anything.
 */
export class DaemonFlags {
  private readonly values: FlagValues

  constructor(values: FlagValues) {
    this.values = values
  }

  string(name: string): string | undefined {
    const v = this.values[name]
    return typeof v === 'string' ? v : undefined
  }

  strings(name: string): string[] {
    const v = this.values[name]
    return Array.isArray(v) ? v : []
  }

  boolean(name: string): boolean {
    return this.values[name] === true
  }

  /** The value through `parse` (which throws a UsageError), if given. */
  parse<T>(name: string, parse: (value: string) => T): T | undefined {
    const v = this.string(name)
    return v != null ? parse(v) : undefined
  }

  /** Milliseconds (`500ms`, `1s`, `10m`...). */
  duration(name: string): number | undefined {
    return this.parse(name, (v) => parseDurationFlag(name, v))
  }

  multiaddr(name: string): Multiaddr | undefined {
    return this.parse(name, (v) => parseMultiaddrFlag(name, v))
  }

  port(name: string): number | undefined {
    return this.parse(name, (v) => parsePortNumber(`--${name}`, v))
  }
}
