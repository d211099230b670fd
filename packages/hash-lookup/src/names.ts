/**
 * Validation of service names, image references and digests.
 * The reference grammar follows Docker's (github.com/distribution/reference).
 */

import { isDigest } from '@mtc/blobs/core'
import {
  DEFAULT_IMAGE_TAG,
  DEFAULT_REGISTRY,
  IMAGE_REPOSITORY_MAX_LENGTH,
  IMAGE_TAG_MAX_LENGTH,
  OFFICIAL_REPOSITORY_NAMESPACE,
  SERVICE_NAME_MAX_LENGTH,
} from './constants.ts'
import { InvalidNameError, InvalidReferenceError } from './errors.ts'

const SERVICE_NAME = new RegExp(`^[a-z0-9]([a-z0-9-]{0,${SERVICE_NAME_MAX_LENGTH - 2}}[a-z0-9])?$`)
const TAG = new RegExp(`^\\w[\\w.-]{0,${IMAGE_TAG_MAX_LENGTH - 1}}$`)
/** One path component: lowercase alphanumerics joined by `.`, `_`, `__` or runs of `-`. */
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/
/** Registry host: DNS name or IPv4 address, optional port. */
const REGISTRY_HOST =
  /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?$/

export interface ImageReference {
  /** Repository including the registry host if one was given, e.g. `ghcr.io/acme/web`. */
  repo: string
  tag?: string
  /** `sha256:<hex>` */
  digest?: string
}

export function isServiceName(name: unknown): name is string {
  return typeof name === 'string' && SERVICE_NAME.test(name)
}

export function assertServiceName(name: unknown): string {
  if (!isServiceName(name)) {
    throw new InvalidNameError(`Invalid service name ${JSON.stringify(name)}`)
  }
  return name
}

/** Digests are the blob layer's (image IDs and tarballs are both sha256 digests). */
export { assertDigest, isDigest } from '@mtc/blobs/core'

/** Parses `repo[:tag][@sha256:<hex>]`; throws InvalidReferenceError. */
export function parseImageReference(reference: unknown): ImageReference {
  if (typeof reference !== 'string') {
    throw new InvalidReferenceError('Image reference must be a string')
  }
  const invalid = (why: string) =>
    new InvalidReferenceError(`Invalid image reference ${JSON.stringify(reference)}: ${why}`)

  let rest = reference
  let digest: string | undefined
  const at = rest.indexOf('@')
  if (at !== -1) {
    digest = rest.slice(at + 1)
    rest = rest.slice(0, at)
    if (!isDigest(digest)) throw invalid('digest is not sha256:<64 lowercase hex>')
  }

  // A colon after the last slash starts the tag; one before it is a registry port.
  let tag: string | undefined
  const colon = rest.lastIndexOf(':')
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1)
    rest = rest.slice(0, colon)
    if (!TAG.test(tag)) throw invalid('bad tag')
  }

  const repo = rest
  if (repo.length === 0) throw invalid('empty repository')
  if (repo.length > IMAGE_REPOSITORY_MAX_LENGTH) throw invalid('repository name too long')
  const components = repo.split('/')
  const host = hasRegistryHost(components) ? components.shift()! : undefined
  if (host !== undefined && !REGISTRY_HOST.test(host)) throw invalid('bad registry host')
  for (const component of components) {
    if (!PATH_COMPONENT.test(component)) {
      throw invalid(`bad path component ${JSON.stringify(component)}`)
    }
  }

  const parsed: ImageReference = { repo }
  if (tag !== undefined) parsed.tag = tag
  if (digest !== undefined) parsed.digest = digest
  return parsed
}

export function assertImageReference(reference: unknown): string {
  parseImageReference(reference)
  return reference as string
}

/** Docker's rule: the first component is a registry host if it could not be a path component. */
function hasRegistryHost(components: string[]): boolean {
  if (components.length < 2) return false
  const first = components[0]!
  return (
    first.includes('.') ||
    first.includes(':') ||
    first === 'localhost' ||
    first !== first.toLowerCase()
  )
}

/**
 * Fully qualified repository, so `alpine`, `library/alpine` and `docker.io/library/alpine`
 * compare equal.
 */
export function normalizeRepository(repo: string): string {
  const components = repo.split('/')
  let host = DEFAULT_REGISTRY
  if (hasRegistryHost(components)) host = components.shift()!
  if (host === 'index.docker.io') host = DEFAULT_REGISTRY
  if (host === DEFAULT_REGISTRY && components.length === 1) {
    components.unshift(OFFICIAL_REPOSITORY_NAMESPACE)
  }
  return [host, ...components].join('/')
}

/** `repo:tag` with the repository normalised and the default tag filled in. */
export function normalizeTaggedName(reference: ImageReference): string {
  return `${normalizeRepository(reference.repo)}:${reference.tag ?? DEFAULT_IMAGE_TAG}`
}
