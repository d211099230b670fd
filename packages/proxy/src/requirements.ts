import { readFile } from 'node:fs/promises'
import type { ScalingSettings } from '@mtc/hash-lookup/client'
import { UsageError } from '@mtc/p2pnode'

/**
 * Performance requirements of a service, in milliseconds of round-trip time between
 * this proxy and an instance. Above the soft limit the proxy asks for a nearer instance
 * (and still uses the best one); above the hard limit an instance is never used.
 */
export interface Requirements {
  softRttMs?: number
  hardRttMs?: number
  /** The record's scaling settings (none: the registry's defaults, see Autoscaler). */
  scaling?: ScalingSettings
  /** The registry's current image of the service: its instances are preferred. */
  imageId?: string
}

/**
 * Per-service requirements that override `--config` (the hash-lookup record's). Called
 * on the request path, before any instance is looked for: an implementation answers from
 * a cache.
 */
export interface RequirementsSource {
  /**
   * The service's requirements (undefined: `--config`'s). Rejects with a ProxyError
   * `ERR_UNKNOWN_SERVICE` when the source knows that no such service exists: the request
   * is answered 404 without looking for instances or asking allocators.
   */
  get(service: string): Promise<Requirements | undefined>
  /** Background work begins (e.g. finding the registry); called with the proxy's start. */
  start?(): void
  stop?(): Promise<void> | void
}

/** No per-service overrides: every service gets the `--config` defaults. */
export const noRequirementsSource: RequirementsSource = {
  async get() {
    return undefined
  },
}

/** A config file larger than this is not a requirements file. */
const MAX_CONFIG_BYTES = 64 * 1024

/**
 * Reads `--config FILE` in the original's format
 * `{"Perf":{"SoftReq":{"RTT":ms},"HardReq":{"RTT":ms}}}` (each part optional).
 */
export async function readRequirementsFile(path: string): Promise<Requirements> {
  let text: string
  try {
    const data = await readFile(path)
    if (data.byteLength > MAX_CONFIG_BYTES) throw new Error('file too large')
    text = data.toString('utf8')
  } catch (err) {
    throw new UsageError(`--config: cannot read ${path}: ${(err as Error).message}`)
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (err) {
    throw new UsageError(`--config: ${path} is not JSON: ${(err as Error).message}`)
  }
  return parseRequirements(json, `--config: ${path}`)
}

export function parseRequirements(json: unknown, where: string): Requirements {
  const perf = field(json, 'Perf', where)
  const soft = rtt(field(perf, 'SoftReq', where), `${where}: Perf.SoftReq.RTT`)
  const hard = rtt(field(perf, 'HardReq', where), `${where}: Perf.HardReq.RTT`)
  if (soft != null && hard != null && soft > hard) {
    throw new UsageError(
      `${where}: the soft RTT limit (${soft} ms) is above the hard one (${hard} ms)`,
    )
  }
  return { softRttMs: soft, hardRttMs: hard }
}

function field(obj: unknown, name: string, where: string): unknown {
  if (obj == null) return undefined
  if (typeof obj !== 'object' || Array.isArray(obj)) {
    throw new UsageError(`${where}: expected an object around "${name}"`)
  }
  return (obj as Record<string, unknown>)[name]
}

function rtt(req: unknown, where: string): number | undefined {
  const value = field(req, 'RTT', where)
  if (value == null) return undefined
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new UsageError(`${where} must be a positive number of milliseconds`)
  }
  return value
}

/** The effective requirements: the override's fields win over the defaults'. */
export function mergeRequirements(defaults: Requirements, override?: Requirements): Requirements {
  return {
    softRttMs: override?.softRttMs ?? defaults.softRttMs,
    hardRttMs: override?.hardRttMs ?? defaults.hardRttMs,
    scaling: override?.scaling ?? defaults.scaling,
    imageId: override?.imageId,
  }
}
