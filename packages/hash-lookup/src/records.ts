/**
 * The service record kept in etcd, and the validation of what clients send for it.
 */

import {
  HEALTH_PATH_MAX_LENGTH,
  MAX_CPUS,
  MAX_HEALTH_INTERVAL_MS,
  MAX_HEALTH_THRESHOLD,
  MAX_RTT_MS,
  MIN_HEALTH_INTERVAL_MS,
} from './constants.ts'
import { InvalidRecordError } from './errors.ts'
import { assertDigest, assertImageReference, assertServiceName } from './names.ts'
import { SCALING_FIELDS, type ScalingSettings, validateScaling } from './scaling.ts'

export interface PerfRequirements {
  /** RTT in milliseconds the service should get; the proxy prefers replicas under it. */
  softRttMs?: number
  /** RTT in milliseconds the service must get; replicas above it are not used. */
  hardRttMs?: number
  cpus?: number
  memoryBytes?: number
}

/** A stored image tarball. */
export interface BlobRef {
  /** `sha256:<hex>` of the tarball bytes. */
  digest: string
  size: number
}

/** What a client sends to create or replace a record (scaling: see scaling.ts). */
export interface ServiceRecordInput extends Partial<ScalingSettings> {
  name: string
  /** Image reference `repo[:tag][@sha256:<hex>]`. */
  image: string
  /** `sha256:<hex>` of the image config, as `docker images --no-trunc` shows it. */
  imageId: string
  blob?: BlobRef
  perf?: PerfRequirements
  /** HTTP path an instance is ready at only while it answers 2xx (see HealthSettings). */
  healthPath?: string
  healthIntervalMs?: number
  healthThreshold?: number
}

/** A record's fields as validated, before the store adds timestamps and version. */
export interface ServiceRecordFields extends Partial<ScalingSettings> {
  name: string
  image: string
  imageId: string
  blob?: BlobRef
  perf: PerfRequirements
  /** Optional HTTP health check of every instance: readiness = 2xx at this path. */
  healthPath?: string
  /** Between two checks (default: the proxy's). */
  healthIntervalMs?: number
  /** Failed checks in a row that make a ready instance not ready (default: the proxy's). */
  healthThreshold?: number
}

export interface ServiceRecord extends ServiceRecordFields {
  /** ISO 8601 */
  createdAt: string
  /** ISO 8601 */
  updatedAt: string
  /** etcd mod revision of the record; changes on every write, see etcd-store.ts. */
  version: number
}

const INPUT_FIELDS = new Set(['name', 'image', 'imageId', 'blob', 'perf', ...SCALING_FIELDS])
const HEALTH_FIELDS = ['healthPath', 'healthIntervalMs', 'healthThreshold']
for (const f of HEALTH_FIELDS) INPUT_FIELDS.add(f)
const BLOB_FIELDS = new Set(['digest', 'size'])
const PERF_FIELDS = new Set(['softRttMs', 'hardRttMs', 'cpus', 'memoryBytes'])

/** Checks every field of a client's record; returns a copy holding only known fields. */
export function validateRecordInput(input: unknown): ServiceRecordFields {
  const fields = asObject(input, 'record', INPUT_FIELDS)
  const record: ServiceRecordFields = {
    name: assertServiceName(fields.name),
    image: assertImageReference(fields.image),
    imageId: assertDigest(fields.imageId),
    perf: validatePerf(fields.perf),
  }
  if (fields.blob !== undefined) record.blob = validateBlob(fields.blob)
  Object.assign(record, validateScaling(fields))
  Object.assign(record, validateHealth(fields))
  return record
}

/** A path of printable ASCII starting with `/` (no spaces: it goes into a request line). */
const HEALTH_PATH = /^\/[\x21-\x7e]*$/

function validateHealth(
  fields: Record<string, unknown>,
): Pick<ServiceRecordFields, 'healthPath' | 'healthIntervalMs' | 'healthThreshold'> {
  const out: Pick<ServiceRecordFields, 'healthPath' | 'healthIntervalMs' | 'healthThreshold'> = {}
  const { healthPath, healthIntervalMs, healthThreshold } = fields
  if (healthPath !== undefined) {
    if (
      typeof healthPath !== 'string' ||
      healthPath.length > HEALTH_PATH_MAX_LENGTH ||
      !HEALTH_PATH.test(healthPath)
    ) {
      throw new InvalidRecordError(
        `healthPath must start with / and hold at most ${HEALTH_PATH_MAX_LENGTH} printable characters, no spaces`,
      )
    }
    out.healthPath = healthPath
  }
  if (healthIntervalMs !== undefined) {
    if (
      !Number.isSafeInteger(healthIntervalMs) ||
      (healthIntervalMs as number) < MIN_HEALTH_INTERVAL_MS ||
      (healthIntervalMs as number) > MAX_HEALTH_INTERVAL_MS
    ) {
      throw new InvalidRecordError(
        `healthIntervalMs must be a whole number from ${MIN_HEALTH_INTERVAL_MS} to ${MAX_HEALTH_INTERVAL_MS}`,
      )
    }
    out.healthIntervalMs = healthIntervalMs as number
  }
  if (healthThreshold !== undefined) {
    if (
      !Number.isSafeInteger(healthThreshold) ||
      (healthThreshold as number) < 1 ||
      (healthThreshold as number) > MAX_HEALTH_THRESHOLD
    ) {
      throw new InvalidRecordError(
        `healthThreshold must be a whole number from 1 to ${MAX_HEALTH_THRESHOLD}`,
      )
    }
    out.healthThreshold = healthThreshold as number
  }
  if (out.healthPath == null && (out.healthIntervalMs != null || out.healthThreshold != null)) {
    throw new InvalidRecordError('healthIntervalMs and healthThreshold need a healthPath')
  }
  return out
}

function validateBlob(input: unknown): BlobRef {
  const blob = asObject(input, 'blob', BLOB_FIELDS)
  const size = blob.size
  if (!Number.isSafeInteger(size) || (size as number) <= 0) {
    throw new InvalidRecordError('blob.size must be a positive integer')
  }
  return { digest: assertDigest(blob.digest), size: size as number }
}

function validatePerf(input: unknown): PerfRequirements {
  if (input === undefined) return {}
  const fields = asObject(input, 'perf', PERF_FIELDS)
  const perf: PerfRequirements = {}
  const softRttMs = optionalNumber(fields, 'softRttMs', MAX_RTT_MS)
  const hardRttMs = optionalNumber(fields, 'hardRttMs', MAX_RTT_MS)
  const cpus = optionalNumber(fields, 'cpus', MAX_CPUS)
  const memoryBytes = optionalNumber(fields, 'memoryBytes', Number.MAX_SAFE_INTEGER)
  if (softRttMs !== undefined && hardRttMs !== undefined && softRttMs > hardRttMs) {
    throw new InvalidRecordError('perf.softRttMs must not exceed perf.hardRttMs')
  }
  if (memoryBytes !== undefined && !Number.isInteger(memoryBytes)) {
    throw new InvalidRecordError('perf.memoryBytes must be an integer')
  }
  if (softRttMs !== undefined) perf.softRttMs = softRttMs
  if (hardRttMs !== undefined) perf.hardRttMs = hardRttMs
  if (cpus !== undefined) perf.cpus = cpus
  if (memoryBytes !== undefined) perf.memoryBytes = memoryBytes
  return perf
}

function optionalNumber(
  fields: Record<string, unknown>,
  key: string,
  max: number,
): number | undefined {
  const value = fields[key]
  if (value === undefined) return undefined
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > max) {
    throw new InvalidRecordError(`perf.${key} must be a positive number not above ${max}`)
  }
  return value
}

/** Rejects non-objects and unknown keys, so a typo like `sofRttMs` is an error, not a no-op. */
function asObject(input: unknown, what: string, known: Set<string>): Record<string, unknown> {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new InvalidRecordError(`${what} must be an object`)
  }
  for (const key of Object.keys(input)) {
    if (!known.has(key)) {
      throw new InvalidRecordError(`${what} has unknown field ${JSON.stringify(key)}`)
    }
  }
  return input as Record<string, unknown>
}

/** One page of records in name order (the reply to a list). */
export interface ListPage {
  records: ServiceRecord[]
  /** Present when more records follow; pass it as `after`. */
  next?: string
}
