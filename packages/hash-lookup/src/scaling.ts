/**
 * A service's scaling settings (`hl-cli add --concurrency/--min-instances/--max-instances`):
 * optional fields of its record; readers take them through scalingOf(), which fills in the
 * defaults, so records written before they existed scale like any other.
 */

import { InvalidRecordError } from './errors.ts'

export interface ScalingSettings {
  /** Target requests in flight per instance: above it the mesh starts another one. */
  concurrency: number
  /** Instances kept running even with no traffic (0: scale to zero). */
  minInstances: number
  /** Mesh-wide cap on the service's instances. */
  maxInstances: number
}

/** Knative's default target is 100 for a container; 10 suits one small Node service. */
export const DEFAULT_CONCURRENCY = 10
export const DEFAULT_MIN_INSTANCES = 0
/** A mesh-wide cap that keeps a runaway service from taking every host. */
export const DEFAULT_MAX_INSTANCES = 10
/**
 * Upper bounds of the settings: far above any mesh we run (a proxy tracks 32 instances
 * of a service), low enough that a typo does not ask for a million instances.
 */
export const MAX_SCALING_INSTANCES = 1_000
export const MAX_CONCURRENCY = 100_000

/** The scaling fields a record may carry. */
export const SCALING_FIELDS = ['concurrency', 'minInstances', 'maxInstances'] as const

/** The effective settings of a record (defaults for absent or invalid fields). */
export function scalingOf(record: Partial<ScalingSettings> | null | undefined): ScalingSettings {
  const int = (v: unknown, min: number, max: number, dflt: number): number =>
    Number.isSafeInteger(v) && (v as number) >= min && (v as number) <= max ? (v as number) : dflt
  const maxInstances = int(record?.maxInstances, 1, MAX_SCALING_INSTANCES, DEFAULT_MAX_INSTANCES)
  return {
    concurrency: int(record?.concurrency, 1, MAX_CONCURRENCY, DEFAULT_CONCURRENCY),
    minInstances: Math.min(
      int(record?.minInstances, 0, MAX_SCALING_INSTANCES, DEFAULT_MIN_INSTANCES),
      maxInstances,
    ),
    maxInstances,
  }
}

/** Checks the scaling fields a client sent; returns those present. */
export function validateScaling(fields: Record<string, unknown>): Partial<ScalingSettings> {
  const out: Partial<ScalingSettings> = {}
  const check = (key: keyof ScalingSettings, min: number, max: number): void => {
    const v = fields[key]
    if (v === undefined) return
    if (!Number.isSafeInteger(v) || (v as number) < min || (v as number) > max) {
      throw new InvalidRecordError(`${key} must be a whole number from ${min} to ${max}`)
    }
    out[key] = v as number
  }
  check('concurrency', 1, MAX_CONCURRENCY)
  check('minInstances', 0, MAX_SCALING_INSTANCES)
  check('maxInstances', 1, MAX_SCALING_INSTANCES)
  const min = out.minInstances ?? DEFAULT_MIN_INSTANCES
  const max = out.maxInstances ?? DEFAULT_MAX_INSTANCES
  if (min > max) {
    throw new InvalidRecordError(`minInstances (${min}) must not exceed maxInstances (${max})`)
  }
  return out
}
